/**
 * Throughput of no-op jobs: how much a job costs in the pool's own machinery (queueing, outcome bookkeeping,
 * metrics), with nothing else to hide it.
 *
 *   (a) Keel's WorkerPool: capacity 1024, 4 workers, handler `() => Effect.void`, one producer fiber calling
 *       `pool.submit` N times, then `pool.awaitIdle`;
 *   (b) p-queue, concurrency 4: N no-op async functions added, then `onIdle()`; the usual Node choice;
 *   (c) the loop one would write by hand in Effect: `Queue.bounded(1024)`, 4 consumer fibers doing
 *       take → no-op → count, one producer offering N times; the floor for any pool built on Effect's Queue.
 *
 * Targets: WorkerPool ≥ 2× p-queue, and ≥ 0.8× the hand-written loop (the pool's guarantees may cost at most
 * 20 %). After one warm-up run of each, the three alternate for BENCH_REPETITIONS rounds (default 5), so drift
 * on the machine hits them alike; the median jobs/s of each is reported. N is BENCH_JOBS (default 200 000).
 */
import { Deferred, Effect, Exit, Fiber, Queue } from "effect"
import { Lifecycle, WorkerPool } from "keel"
import PQueue from "p-queue"
import { collectGarbage, finish, median, perSecond, ratio, section, verdict } from "./lib.js"
import type { Row } from "./lib.js"

const jobs = Number(process.env["BENCH_JOBS"] ?? 200_000)
const repetitions = Number(process.env["BENCH_REPETITIONS"] ?? 5)
const capacity = 1024
const workers = 4

/** One producer submitting `jobs` times, through whatever `submit` is, with the same loop for every contender. */
const produce = <E>(submit: () => Effect.Effect<unknown, E>) => {
  let submitted = 0
  return Effect.whileLoop({ while: () => submitted < jobs, body: () => (submitted++, submit()), step: () => {} })
}

/** Times `body` only, not the setup around it; the result is jobs per second. */
const timed = <E, R>(body: Effect.Effect<void, E, R>) =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.map(body, () => jobs / ((performance.now() - start) / 1000))
  })

const workerPool: Effect.Effect<number> = Effect.gen(function*() {
  const pool = yield* WorkerPool.make({ name: "bench", capacity, workers, handler: () => Effect.void })
  return yield* timed(Effect.zipRight(produce(() => pool.submit(undefined)), pool.awaitIdle))
}).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" })), Effect.orDie)

const pQueue = async (): Promise<number> => {
  const queue = new PQueue({ concurrency: workers })
  const noop = async () => {}
  const start = performance.now()
  for (let index = 0; index < jobs; index++) void queue.add(noop)
  await queue.onIdle()
  return jobs / ((performance.now() - start) / 1000)
}

const handWritten: Effect.Effect<number> = Effect.gen(function*() {
  const queue = yield* Queue.bounded<number>(capacity)
  const done = yield* Deferred.make<void>()
  let consumed = 0
  const consumer = Effect.forever(Effect.flatMap(Queue.take(queue), () =>
    Effect.flatMap(Effect.void, () =>
      Effect.sync(() => {
        if (++consumed === jobs) Deferred.unsafeDone(done, Exit.void)
      }))))
  const consumers = yield* Effect.forEach(Array.from({ length: workers }), () => Effect.fork(consumer))
  const rate = yield* timed(Effect.zipRight(produce(() => Queue.offer(queue, 0)), Deferred.await(done)))
  yield* Fiber.interruptAll(consumers)
  return rate
})

const contenders: ReadonlyArray<{ readonly name: string; readonly run: () => Promise<number> }> = [
  { name: "WorkerPool", run: () => Effect.runPromise(workerPool) },
  { name: "p-queue", run: pQueue },
  { name: "hand-written Effect loop", run: () => Effect.runPromise(handWritten) }
]

const runOnce = async (contender: (typeof contenders)[number]) => {
  collectGarbage()
  return contender.run()
}

section(`throughput: ${jobs.toLocaleString("en-US")} no-op jobs, ${workers} workers, ${repetitions} repetitions after a warm-up`)
const samples = new Map(contenders.map((contender) => [contender.name, [] as Array<number>]))
for (const contender of contenders) {
  console.log(`warm-up ${contender.name}: ${perSecond(await runOnce(contender))}`)
}
for (let round = 1; round <= repetitions; round++) {
  const line: Array<string> = []
  for (const contender of contenders) {
    const rate = await runOnce(contender)
    samples.get(contender.name)!.push(rate)
    line.push(`${contender.name} ${perSecond(rate)}`)
  }
  console.log(`round ${round}: ${line.join(", ")}`)
}

const medians = Object.fromEntries(contenders.map((contender) => [contender.name, median(samples.get(contender.name)!)]))
const versusPQueue = medians["WorkerPool"]! / medians["p-queue"]!
const versusLoop = medians["WorkerPool"]! / medians["hand-written Effect loop"]!
console.log()
for (const contender of contenders) console.log(`median ${contender.name}: ${perSecond(medians[contender.name]!)}`)
console.log(`WorkerPool / p-queue: ${ratio(versusPQueue)} (target ≥ 2×) — ${verdict(versusPQueue >= 2)}`)
console.log(`WorkerPool / hand-written loop: ${ratio(versusLoop)} (target ≥ 0.8×) — ${verdict(versusLoop >= 0.8)}`)

const rows: Array<Row> = [
  ...contenders.map((contender) => ({
    benchmark: "throughput",
    metric: `${contender.name} (median jobs/s)`,
    value: perSecond(medians[contender.name]!),
    target: ""
  })),
  { benchmark: "throughput", metric: "WorkerPool / p-queue", value: ratio(versusPQueue), target: "≥ 2×", met: versusPQueue >= 2 },
  { benchmark: "throughput", metric: "WorkerPool / hand-written loop", value: ratio(versusLoop), target: "≥ 0.8×", met: versusLoop >= 0.8 }
]
await finish("throughput", rows)
