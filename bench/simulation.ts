/**
 * How fast the simulator explores: scenarios per second on one core for a 2-instance, 50-job scenario — two
 * `WorkerPool.consume` instances (2 workers each) on one shared memory `JobQueue`, 50 jobs offered, the
 * instances crashing at seeded steps (`crashProbability` 0.002), run until every job is acked or a minute of
 * simulated time passes — with the total-queue check of every run (no acked job lost, every job completed
 * while a consumer lives, a duplicate only after a crash). Target: ≥ 200 scenarios/s. The alternative it is
 * set against is what tests use today, the same scenario on TestClock with Effect's own scheduler (one
 * interleaving, no crashes), timed the same way.
 *
 * BENCH_SIMULATION_SCENARIOS sets the count (default 500).
 */
import { Effect, Fiber, TestClock, TestContext } from "effect"
import { Lifecycle, WorkerPool } from "keel"
import { MemoryJobQueue } from "keel/memory"
import { Simulation } from "keel/testing"
import { finish, perSecond, ratio, section } from "./lib.js"

const scenarios = Number(process.env["BENCH_SIMULATION_SCENARIOS"] ?? 500)
const jobCount = 50
const target = 200

const scenario = (sharedQueue: boolean) =>
  Effect.gen(function*() {
    const made = yield* MemoryJobQueue.make({ capacity: 100, leaseDuration: "1 second", maxDeliveries: 20 })
    const queue = sharedQueue ? Simulation.shared(made) : made
    const completions = new Map<string, number>()
    const consumer = Effect.gen(function*() {
      yield* WorkerPool.consume(queue, {
        workers: 2,
        handler: (_payload, job) =>
          Effect.zipRight(Effect.sleep("20 millis"), Effect.sync(() => completions.set(job.id, (completions.get(job.id) ?? 0) + 1)))
      })
      yield* Effect.never
    }).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" })))
    const instances = [yield* Simulation.instance("a", consumer), yield* Simulation.instance("b", consumer)]
    for (let job = 1; job <= jobCount; job++) yield* queue.offer(job, { id: `job-${job}` })
    for (let waited = 0; waited < 600; waited++) {
      const depth = yield* queue.depth
      if (depth.ready + depth.leased + depth.delayed === 0) break
      yield* Effect.sleep("100 millis")
    }
    yield* Effect.forEach(instances, (instance) => Fiber.interruptFork(instance.fiber), { discard: true })
    return { completions, depth: yield* queue.depth }
  }).pipe(Effect.scoped)

/** The total-queue check of one run; the reason it fails, or undefined. */
const violation = (result: Simulation.Result<Effect.Effect.Success<ReturnType<typeof scenario>>, unknown>) => {
  if (result.status !== "completed" || result.exit?._tag !== "Success") return Simulation.describe(result)
  const crashes = result.trace.filter((step) => step._tag === "Crashed").length
  const { completions, depth } = result.exit.value
  if (crashes < 2 && (completions.size !== jobCount || depth.ready + depth.leased + depth.delayed > 0)) {
    return `a consumer lived, yet ${jobCount - completions.size} jobs never completed`
  }
  if (crashes === 0 && [...completions.values()].some((count) => count > 1)) return "a duplicate without a crash"
  return undefined
}

section(`simulation: ${scenarios} scenarios of 2 instances and ${jobCount} jobs, one core`)
let crashed = 0
let failed = 0
const started = performance.now()
for (let seed = 1; seed <= scenarios; seed++) {
  const result = Simulation.run(scenario(true), { seed, crashProbability: 0.002 })
  if (result.trace.some((step) => step._tag === "Crashed")) crashed++
  const reason = violation(result)
  if (reason !== undefined) {
    failed++
    if (failed <= 3) console.log(`seed ${seed}: ${reason}`)
  }
}
const simulatedPerSecond = scenarios / ((performance.now() - started) / 1000)
console.log(`${perSecond(simulatedPerSecond)} scenarios (${crashed} with a crash, ${failed} failing the check)`)

const testClockRuns = Math.min(scenarios, 200)
const testClockStarted = performance.now()
for (let run = 0; run < testClockRuns; run++) {
  await Effect.runPromise(Effect.gen(function*() {
    const fiber = yield* Effect.fork(scenario(false))
    while (fiber.unsafePoll() === null) yield* TestClock.adjust("100 millis")
  }).pipe(Effect.provide(TestContext.TestContext)))
}
const testClockPerSecond = testClockRuns / ((performance.now() - testClockStarted) / 1000)
console.log(`TestClock, Effect's scheduler: ${perSecond(testClockPerSecond)} scenarios`)

await finish("simulation", [
  { benchmark: "simulation", metric: "2 instances, 50 jobs, crashes: scenarios/s", value: perSecond(simulatedPerSecond), target: `≥ ${target}/s`, met: simulatedPerSecond >= target },
  { benchmark: "simulation", metric: "same scenario on TestClock (one interleaving)", value: perSecond(testClockPerSecond), target: "" },
  { benchmark: "simulation", metric: "simulator / TestClock", value: ratio(simulatedPerSecond / testClockPerSecond), target: "" },
  { benchmark: "simulation", metric: "runs failing the total-queue check", value: String(failed), target: "0", met: failed === 0 }
])
