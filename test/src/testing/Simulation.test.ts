/**
 * The simulator as a user relies on it: a seed fixes the path (same seed, same trace hash and the same
 * observable order), different seeds explore different interleavings, simulated time passes without wall
 * time and in the right order, the closed world reports a program waiting on the outside, a planted race is
 * found and replayed exactly from its token, and a program that escapes the simulation fails the
 * determinism check. Keel's own WorkerPool runs under it with every job accounted for.
 */
import { describe, expect, it } from "vitest"
import { Clock, Deferred, Effect, Fiber, Queue, Random, Ref } from "effect"
import { Lifecycle, WorkerPool } from "keel"
import { MemoryJobQueue } from "keel/memory"
import { Ledger, Simulation } from "keel/testing"

/** A producer and two consumers over a queue of 2, each consumer logging what it took. */
const producerConsumers = Effect.gen(function*() {
  const queue = yield* Queue.bounded<number>(2)
  const log: Array<string> = []
  const consumer = (name: string) =>
    Effect.forever(Effect.flatMap(Queue.take(queue), (item) => Effect.sync(() => log.push(`${name}:${item}`))))
  const consumers = yield* Effect.all([Effect.fork(consumer("a")), Effect.fork(consumer("b"))])
  yield* Effect.forEach([1, 2, 3, 4, 5, 6], (item) => Queue.offer(queue, item), { discard: true })
  while (log.length < 6) yield* Effect.yieldNow()
  yield* Fiber.interruptAll(consumers)
  return log.join(" ")
})

/** Seeds of the dogfood runs: a few hundred in `npm test`; KEEL_SIMULATION_SEEDS=100000 for a long run. */
const dogfoodSeeds = Number(process.env["KEEL_SIMULATION_SEEDS"] ?? 200)

/** Two fibers incrementing a counter with a read, a yield and a write: some orders lose an update. */
const racyIncrements = Effect.gen(function*() {
  const counter = yield* Ref.make(0)
  const increment = Effect.flatMap(Ref.get(counter), (seen) => Effect.zipRight(Effect.yieldNow(), Ref.set(counter, seen + 1)))
  yield* Effect.all([increment, increment], { concurrency: "unbounded" })
  return yield* Ref.get(counter)
})

const successOf = <A>(result: Simulation.Result<A, unknown>) =>
  result.exit !== undefined && result.exit._tag === "Success" ? result.exit.value : undefined

describe("Simulation", () => {
  it("a seed fixes the path: the same seed gives the same trace hash and output, 50 seeds give several", () => {
    const outputs = new Set<string>()
    for (let seed = 1; seed <= 50; seed++) {
      const first = Simulation.checkDeterminism(producerConsumers, { seed })
      const again = Simulation.run(producerConsumers, { seed })
      expect(first.status).toBe("completed")
      expect([again.hash, successOf(again)]).toEqual([first.hash, successOf(first)])
      outputs.add(successOf(first)!)
    }
    expect(outputs.size).toBeGreaterThan(3)
  })

  it("simulated time: an hour of sleeps takes no wall time, timers fire in time order, the Clock reads them", () => {
    const sleepers = Effect.gen(function*() {
      const woke: Array<string> = []
      const sleeper = (name: string, minutes: number) =>
        Effect.zipRight(Effect.sleep(`${minutes} minutes`), Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.sync(() => woke.push(`${name}@${at / 60_000}m`))))
      yield* Effect.all([sleeper("late", 60), sleeper("early", 1), sleeper("middle", 30)], { concurrency: "unbounded" })
      return woke
    })
    const started = Date.now()
    for (let seed = 1; seed <= 20; seed++) {
      const result = Simulation.run(sleepers, { seed })
      expect(successOf(result)).toEqual(["early@1m", "middle@30m", "late@60m"])
      expect(result.endedAt).toBe(3_600_000)
      expect(result.trace.filter((step) => step._tag === "Advanced").map((step) => step._tag === "Advanced" && step.to))
        .toEqual([60_000, 1_800_000, 3_600_000])
    }
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it("seeded randomness: the program's Random follows the seed", () => {
    const draws = Effect.all([Random.nextInt, Random.nextInt, Random.nextInt])
    expect(successOf(Simulation.run(draws, { seed: 7 }))).toEqual(successOf(Simulation.run(draws, { seed: 7 })))
    expect(successOf(Simulation.run(draws, { seed: 7 }))).not.toEqual(successOf(Simulation.run(draws, { seed: 8 })))
  })

  it("a closed world: a program waiting on a real promise, or deadlocked, ends stalled and says so", () => {
    const outside = Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 10)))
    const waiting = Simulation.run(outside, { seed: 1 })
    expect(waiting.status).toBe("stalled")
    expect(Simulation.describe(waiting)).toMatch(/^stalled: nothing can run and no timer is pending/)
    const deadlocked = Simulation.run(Effect.flatMap(Deferred.make<void>(), Deferred.await), { seed: 1 })
    expect(deadlocked.status).toBe("stalled")
    const spinning = Simulation.run(Effect.forever(Effect.yieldNow()), { seed: 1, maxSteps: 500 })
    expect(spinning.status).toBe("exhausted")
  })

  it("a planted lost update is found within 50 seeds, and its token replays the same path", () => {
    const results = Array.from({ length: 50 }, (_, index) => Simulation.run(racyIncrements, { seed: index + 1 }))
    const lost = results.find((result) => successOf(result) === 1)
    const kept = results.find((result) => successOf(result) === 2)
    expect(lost).toBeDefined()
    expect(kept).toBeDefined()
    const replayed = Simulation.replay(racyIncrements, lost!.token)
    expect([replayed.hash, successOf(replayed), replayed.trace]).toEqual([lost!.hash, 1, lost!.trace])
    expect(Simulation.describe(lost!)).toContain(lost!.token)
  })

  it("a program whose path depends on Math.random escapes the simulation: the determinism check fails", () => {
    const escaping = Effect.suspend(() => Effect.repeatN(Effect.yieldNow(), Math.floor(Math.random() * 5)))
    // Each check runs it twice; the two runs take one path only when both draws agree (1 in 5).
    const failures = Array.from({ length: 20 }, (_, index) => {
      try {
        Simulation.checkDeterminism(escaping, { seed: index + 1 })
        return undefined
      } catch (error) {
        return error
      }
    }).filter((error) => error !== undefined)
    expect(failures.length).toBeGreaterThan(0)
    expect(failures[0]).toBeInstanceOf(Simulation.SimulationFailed)
    expect(String(failures[0])).toMatch(/ran two different paths .* the program escapes the simulation/)
  })

  it("Keel's WorkerPool under many seeds: every accepted job has exactly one outcome, and the drain ends", () => {
    const poolRun = Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, "done">()
      const pool = yield* WorkerPool.make<string>({
        workers: 3,
        capacity: 4,
        handler: (id) => Effect.zipRight(Effect.sleep("10 millis"), ledger.settle(id, "done")),
        onOutcome: () => Effect.void
      })
      for (let job = 1; job <= 12; job++) {
        const id = `job-${job}`
        yield* ledger.accept(id)
        yield* pool.submit(id)
      }
      yield* pool.awaitIdle
      return yield* ledger.check
    }).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "10 seconds" })))
    const hashes = new Set<string>()
    for (let seed = 1; seed <= dogfoodSeeds; seed++) {
      const result = Simulation.run(poolRun, { seed })
      expect(Simulation.describe(result)).toMatch(/^completed/)
      hashes.add(result.hash)
    }
    expect(hashes.size).toBeGreaterThan(10)
  })
})

describe("Simulation: instances and crashes", () => {
  it("a crashed instance never runs again and its finalizers never run; the others go on", () => {
    const scenario = Effect.gen(function*() {
      const events: Array<string> = []
      const ticking = (name: string, ticks: number) =>
        Effect.gen(function*() {
          yield* Effect.addFinalizer(() => Effect.sync(() => events.push(`${name} finalized`)))
          for (let tick = 1; tick <= ticks; tick++) {
            yield* Effect.sleep("1 second")
            events.push(`${name} tick ${tick}`)
          }
        }).pipe(Effect.scoped)
      const a = yield* Simulation.instance("a", ticking("a", 10))
      const b = yield* Simulation.instance("b", ticking("b", 4))
      yield* Effect.sleep("2500 millis")
      yield* Simulation.crash(a)
      yield* Fiber.join(b.fiber)
      yield* Effect.sleep("1 minute")
      return events.filter((event) => event.startsWith("a")).join(", ") + " | " +
        events.filter((event) => event.startsWith("b")).join(", ")
    })
    for (let seed = 1; seed <= 20; seed++) {
      const result = Simulation.run(scenario, { seed })
      expect(successOf(result)).toBe("a tick 1, a tick 2 | b tick 1, b tick 2, b tick 3, b tick 4, b finalized")
      expect(result.trace.filter((step) => step._tag === "Crashed")).toEqual([{ _tag: "Crashed", instance: "a" }])
    }
  })

  it("two consumer instances of one queue crash at seeded steps: no acked job is lost, a duplicate only after a crash", () => {
    const jobs = ["j1", "j2", "j3", "j4", "j5", "j6"]
    const scenario = Effect.gen(function*() {
      // The queue stands for a service reached over the network: its lease timers outlive a crashed consumer.
      const queue = Simulation.shared(
        yield* MemoryJobQueue.make({ capacity: 10, leaseDuration: "1 second", maxDeliveries: 10 })
      )
      const completions: Array<{ readonly id: string; readonly by: string }> = []
      const consumer = (name: string) =>
        Effect.gen(function*() {
          yield* WorkerPool.consume(queue, {
            workers: 2,
            // The side effect happens, then a few steps pass before the outcome reaches the queue (its ack):
            // a crash between them is the case at-least-once delivery exists for.
            handler: (_payload, job) =>
              Effect.sleep("100 millis").pipe(
                Effect.zipRight(Effect.sync(() => completions.push({ id: job.id, by: name }))),
                Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 5))
              )
          })
          yield* Effect.never
        }).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" })))
      yield* Simulation.instance("consumer-a", consumer("consumer-a"))
      yield* Simulation.instance("consumer-b", consumer("consumer-b"))
      for (const id of jobs) yield* queue.offer(id, { id })
      // Until every job is acked, or a minute of simulated time when both consumers died.
      for (let waited = 0; waited < 600; waited++) {
        const depth = yield* queue.depth
        if (depth.ready + depth.leased + depth.delayed === 0) break
        yield* Effect.sleep("100 millis")
      }
      return { completions, depth: yield* queue.depth }
    }).pipe(Effect.scoped)
    let crashedRuns = 0
    let duplicatedRuns = 0
    for (let seed = 1; seed <= dogfoodSeeds; seed++) {
      const result = Simulation.run(scenario, { seed, crashProbability: 0.006 })
      expect(result.status, Simulation.describe(result)).toBe("completed")
      const { completions, depth } = successOf(result)!
      const crashes = result.trace.flatMap((step) => (step._tag === "Crashed" ? [step.instance] : []))
      if (crashes.length > 0) crashedRuns++
      const survivors = ["consumer-a", "consumer-b"].filter((name) => !crashes.includes(name))
      // With a consumer alive, every offered job is completed; with none, what was acked still was.
      if (survivors.length > 0) {
        expect(depth, Simulation.describe(result)).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
        expect(new Set(completions.map((completion) => completion.id))).toEqual(new Set(jobs))
      }
      const counts = new Map<string, number>()
      for (const { id } of completions) counts.set(id, (counts.get(id) ?? 0) + 1)
      const duplicated = [...counts].filter(([, count]) => count > 1)
      if (duplicated.length > 0) {
        duplicatedRuns++
        // A job completed twice only because the instance that completed it first crashed before its ack.
        for (const [id] of duplicated) {
          const first = completions.find((completion) => completion.id === id)!
          expect(crashes, `${id}: ${Simulation.describe(result)}`).toContain(first.by)
        }
      }
    }
    expect(crashedRuns).toBeGreaterThan(dogfoodSeeds / 10)
    expect(duplicatedRuns).toBeGreaterThan(0)
    console.log(`${dogfoodSeeds} seeds: ${crashedRuns} with a crash, ${duplicatedRuns} with a job completed twice`)
  })
})

/** The same race, hidden from Effect's own order: the second fiber starts two yields late. */
const lateRacyIncrements = Effect.gen(function*() {
  const counter = yield* Ref.make(0)
  const increment = Effect.flatMap(Ref.get(counter), (seen) => Effect.zipRight(Effect.yieldNow(), Ref.set(counter, seen + 1)))
  yield* Effect.all([increment, Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 1), increment)], { concurrency: "unbounded" })
  return yield* Ref.get(counter)
})

describe("Simulation.search: failing schedules found by fast-check and shrunk", () => {
  it("finds a lost update Effect's own order never shows, shrinks it to a few decisions, and replays it", () => {
    expect(successOf(Simulation.run(lateRacyIncrements, { seed: 1, decisions: [] }))).toBe(2)
    const found = Simulation.search(lateRacyIncrements, (result) => successOf(result) === 2, { seed: 42 })
    expect(found).toBeDefined()
    const { decisions = [] } = Simulation.decodeToken(found!.run.token)
    expect(successOf(found!.run)).toBe(1)
    expect(decisions.length).toBeLessThanOrEqual(30)
    expect(decisions.every((decision) => decision >= 0)).toBe(true)
    expect(decisions.length).toBeGreaterThan(0)
    const replayed = Simulation.replay(lateRacyIncrements, found!.run.token)
    expect([replayed.hash, successOf(replayed)]).toEqual([found!.run.hash, 1])
    console.log(`lost update found after ${found!.tried} schedules, shrunk to decisions [${decisions.join(", ")}]`)
  })

  it("a property that holds under every schedule finds nothing", () => {
    const safe = Effect.gen(function*() {
      const counter = yield* Ref.make(0)
      yield* Effect.all([Ref.update(counter, (n) => n + 1), Ref.update(counter, (n) => n + 1)], { concurrency: "unbounded" })
      return yield* Ref.get(counter)
    })
    expect(Simulation.search(safe, (result) => successOf(result) === 2, { runs: 100 })).toBeUndefined()
  })

  it("past its decisions a run takes the oldest ready task, as Effect's scheduler does", () => {
    const fifo = Simulation.run(producerConsumers, { seed: 1, decisions: [] })
    expect(fifo.trace.every((step) => step._tag !== "Ran" || step.choice === 0)).toBe(true)
    expect(Simulation.run(producerConsumers, { seed: 2, decisions: [] }).hash).toBe(fifo.hash)
  })
})

describe("Simulation: PCT scheduling", () => {
  it("finds the late lost update within 100 seeds, deterministically per seed, and replays it from the token", () => {
    const strategy = { pct: { depth: 2, steps: 20 } } as const
    const results = Array.from({ length: 100 }, (_, index) =>
      Simulation.checkDeterminism(lateRacyIncrements, { seed: index + 1, strategy }))
    const lost = results.filter((result) => successOf(result) === 1)
    expect(lost.length).toBeGreaterThan(0)
    expect(results.some((result) => successOf(result) === 2)).toBe(true)
    const replayed = Simulation.replay(lateRacyIncrements, lost[0]!.token)
    expect([replayed.hash, successOf(replayed)]).toEqual([lost[0]!.hash, 1])
    console.log(`PCT depth 2: the lost update in ${lost.length} of 100 seeds`)
  })
})
