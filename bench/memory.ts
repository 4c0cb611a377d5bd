/**
 * Memory under overload: a producer ten times faster than the workers, for BENCH_OVERLOAD_SECONDS (default 30)
 * on the real clock. With backpressure (`submit` suspends while the queue is full) the pool holds at most
 * `capacity` jobs whatever the producer does, so the resident set must stay flat: target, less than 20 MB of
 * growth from the sample after warm-up (at 2 s) to the highest later sample.
 *
 * 4 workers run jobs of `Effect.sleep("10 millis")` (about 400 jobs/s in all); the producer submits a burst of
 * 4 jobs on every 1 ms tick (about 4000 jobs/s when it is not held back). The resident set is sampled every
 * second, after a full GC when Node runs with --expose-gc (bench/run.ts starts this file that way). Also
 * printed: jobs submitted and completed, and how long the producer spent inside `submit`, i.e. held back.
 */
import { Duration, Effect, Fiber, Schedule } from "effect"
import { Lifecycle, WorkerPool } from "keel"
import { collectGarbage, finish, max, mb, ms, perSecond, section, verdict } from "./lib.js"

const seconds = Number(process.env["BENCH_OVERLOAD_SECONDS"] ?? 30)
const warmUpSeconds = 2
const limitBytes = 20 * 1024 * 1024
const workers = 4
const capacity = 1024
const jobMs = 10
const burst = 4
const tickMs = 1

interface Sample {
  readonly second: number
  readonly rss: number
  readonly heapUsed: number
  readonly completed: number
}

const program = Effect.gen(function*() {
  const pool = yield* WorkerPool.make<number>({
    name: "overload",
    capacity,
    workers,
    handler: () => Effect.sleep(Duration.millis(jobMs)),
    // At the end, queued jobs are handed back (silently) rather than run: only the measurement matters.
    onShutdown: "handBack",
    handBack: () => Effect.void
  })

  let submitted = 0
  let insideSubmitMs = 0
  const submitBurst = Effect.suspend(() => {
    const startedAt = performance.now()
    return Effect.suspend(() => pool.submit(submitted)).pipe(
      Effect.zipRight(Effect.sync(() => void submitted++)),
      Effect.repeatN(burst - 1),
      Effect.ensuring(Effect.sync(() => void (insideSubmitMs += performance.now() - startedAt)))
    )
  })
  const startedAt = performance.now()
  const producer = yield* Effect.fork(Effect.repeat(submitBurst, Schedule.fixed(Duration.millis(tickMs))))

  const samples: Array<Sample> = []
  for (let second = 1; second <= seconds; second++) {
    yield* Effect.sleep(Duration.millis(Math.max(0, startedAt + second * 1000 - performance.now())))
    collectGarbage()
    const { rss, heapUsed } = process.memoryUsage()
    const { completed } = yield* pool.stats
    samples.push({ second, rss, heapUsed, completed })
    console.log(`${String(second).padStart(3)} s  rss ${mb(rss).padStart(8)}  heap used ${mb(heapUsed).padStart(8)}  completed ${completed}`)
  }
  yield* Fiber.interrupt(producer)
  const elapsedMs = performance.now() - startedAt
  const stats = yield* pool.stats
  return { samples, submitted, completed: stats.completed, insideSubmitMs, elapsedMs }
}).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" })), Effect.orDie)

section(
  `memory under overload: ${seconds} s, ${workers} workers × ${jobMs} ms jobs (≈${(workers * 1000) / jobMs} jobs/s), ` +
    `producer ${burst} jobs per ${tickMs} ms tick (≈${(burst * 1000) / tickMs} jobs/s), capacity ${capacity}`
)
if (globalThis.gc === undefined) console.log("(no --expose-gc: samples are taken without a full GC first)")
if (seconds <= warmUpSeconds) throw new Error(`BENCH_OVERLOAD_SECONDS must be more than the ${warmUpSeconds} s warm-up`)

const result = await Effect.runPromise(program)
const baseline = result.samples.find((sample) => sample.second === warmUpSeconds)!
const peak = max(result.samples.filter((sample) => sample.second >= warmUpSeconds).map((sample) => sample.rss))
const growth = peak - baseline.rss
const met = growth < limitBytes
const heldBack = result.insideSubmitMs / result.elapsedMs
console.log(
  `\nrss at ${warmUpSeconds} s ${mb(baseline.rss)}, max after ${mb(peak)}: growth ${mb(growth)} ` +
    `(target < ${mb(limitBytes)}: ${verdict(met)})`
)
console.log(
  `jobs submitted ${result.submitted}, completed ${result.completed} (${perSecond((result.completed * 1000) / result.elapsedMs)}); ` +
    `producer inside submit ${ms(result.insideSubmitMs)} of ${ms(result.elapsedMs)} (${(heldBack * 100).toFixed(0)} %)`
)

await finish("memory", [
  {
    benchmark: "memory under overload",
    metric: `rss growth after ${warmUpSeconds} s (${seconds} s run)`,
    value: `${mb(growth)} (${mb(baseline.rss)} → ${mb(peak)})`,
    target: `< ${mb(limitBytes)}`,
    met
  },
  {
    benchmark: "memory under overload",
    metric: "jobs completed / submitted",
    value: `${result.completed} / ${result.submitted}`,
    target: ""
  },
  {
    benchmark: "memory under overload",
    metric: "producer held back in submit",
    value: `${(heldBack * 100).toFixed(0)} % of the run`,
    target: ""
  }
])
