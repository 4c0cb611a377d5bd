/**
 * WorkerPool behaviour a user relies on, case by case: backpressure and the full-queue strategies,
 * defects and timeouts and retries, intake closing on drain, the hand-back policy, stats and metrics.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Deferred, Duration, Effect, Fiber, Metric, Option, Schedule, TestClock } from "effect"
import { Evicted, Lifecycle, QueueFull, ShuttingDown, Timeout, WorkerPool } from "keel"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly attempt: number }> {}

const withLifecycle = Effect.provide(Lifecycle.layer({ drainTimeout: "10 seconds" }))

/** A pool whose jobs wait on a gate, so tests decide when work finishes. */
const gatedPool = (options: Partial<WorkerPool.Options<string, never, never>> = {}) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const started: Array<string> = []
    const letters: Array<WorkerPool.FailedJob<string>> = []
    const pool = yield* WorkerPool.make<string>({
      capacity: 2,
      workers: 1,
      handler: (payload) => Effect.zipRight(Effect.sync(() => started.push(payload)), Deferred.await(gate)),
      deadLetter: (letter) => Effect.sync(() => letters.push(letter)),
      ...options
    })
    // Opened before the pool drains, so a failed assertion ends the test instead of hanging the drain.
    yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
    yield* TestClock.adjust(0)
    return { pool, open: Deferred.succeed(gate, undefined), started, letters }
  })

describe("WorkerPool intake", () => {
  it.scoped("submit suspends while the queue is full; trySubmit fails at once with QueueFull", () =>
    Effect.gen(function*() {
      const { open, pool, started } = yield* gatedPool()
      yield* pool.submit("a") // taken by the worker
      yield* pool.submit("b")
      yield* pool.submit("c") // the queue (capacity 2) is now full
      const blocked = yield* Effect.fork(pool.submit("d"))
      yield* TestClock.adjust(0)
      expect(Option.isNone(yield* blocked.poll)).toBe(true)
      expect(yield* Effect.flip(pool.trySubmit("e"))).toEqual(new QueueFull({ capacity: 2 }))
      const stats = yield* pool.stats
      expect([stats.depth, stats.inFlight, stats.waitingProducers, stats.accepted]).toEqual([2, 1, 1, 3])
      yield* open
      yield* Fiber.join(blocked)
      yield* pool.awaitIdle
      expect(started).toEqual(["a", "b", "c", "d"])
    }).pipe(withLifecycle))

  it.scoped("dropNewest refuses a new job with QueueFull instead of waiting", () =>
    Effect.gen(function*() {
      const { open, pool, started } = yield* gatedPool({ strategy: "dropNewest" })
      yield* Effect.forEach(["a", "b", "c"], (payload) => pool.submit(payload))
      expect(yield* Effect.flip(pool.submit("d"))).toEqual(new QueueFull({ capacity: 2 }))
      yield* open
      yield* pool.awaitIdle
      expect(started).toEqual(["a", "b", "c"])
    }).pipe(withLifecycle))

  it.scoped("dropOldest evicts the oldest queued job to the dead-letter sink, never silently", () =>
    Effect.gen(function*() {
      const { letters, open, pool, started } = yield* gatedPool({ strategy: "dropOldest" })
      yield* Effect.forEach(["a", "b", "c", "d"], (payload) => pool.submit(payload))
      expect(letters.map((letter) => letter.job.payload)).toEqual(["b"])
      expect(Cause.failureOption(letters[0]!.cause)).toEqual(Option.some(new Evicted({ capacity: 2 })))
      yield* open
      yield* pool.awaitIdle
      expect(started).toEqual(["a", "c", "d"])
      const stats = yield* pool.stats
      expect([stats.completed, stats.failed, stats.deadLettered]).toEqual([3, 0, 1])
    }).pipe(withLifecycle))

  it.scoped("intake closes with ShuttingDown as soon as the Lifecycle drains", () =>
    Effect.gen(function*() {
      const { pool } = yield* gatedPool()
      yield* Lifecycle.shutdown("deploy")
      yield* TestClock.adjust(0)
      expect(yield* Effect.flip(pool.submit("late"))).toBeInstanceOf(ShuttingDown)
      expect(yield* Effect.flip(pool.trySubmit("late"))).toBeInstanceOf(ShuttingDown)
      expect((yield* pool.stats).accepting).toBe(false)
    }).pipe(withLifecycle))
})

describe("WorkerPool jobs", () => {
  it.scoped("a thrown exception fails that job only; the worker goes on", () =>
    Effect.gen(function*() {
      const letters: Array<WorkerPool.FailedJob<number>> = []
      const done: Array<number> = []
      const pool = yield* WorkerPool.make<number>({
        capacity: 8,
        workers: 1,
        handler: (n) =>
          Effect.sync(() => {
            if (n === 2) throw new Error("bad input 2")
            done.push(n)
          }),
        deadLetter: (letter) => Effect.sync(() => letters.push(letter))
      })
      yield* Effect.forEach([1, 2, 3], (n) => pool.submit(n))
      yield* pool.awaitIdle
      expect(done).toEqual([1, 3])
      expect(letters).toHaveLength(1)
      expect(Cause.isDie(letters[0]!.cause)).toBe(true)
      expect(letters[0]!.attempts).toBe(1)
      expect((yield* pool.stats).failed).toBe(1)
    }).pipe(withLifecycle))

  it.scoped("a per-attempt timeout interrupts the job and fails it with Timeout { after }", () =>
    Effect.gen(function*() {
      const letters: Array<WorkerPool.FailedJob<number>> = []
      let cleanedUp = false
      const pool = yield* WorkerPool.make<number>({
        capacity: 1,
        workers: 1,
        timeout: "1 second",
        handler: () => Effect.sleep("5 seconds").pipe(Effect.onInterrupt(() => Effect.sync(() => (cleanedUp = true)))),
        deadLetter: (letter) => Effect.sync(() => letters.push(letter))
      })
      yield* pool.submit(1)
      yield* TestClock.adjust("1 second")
      yield* pool.awaitIdle
      expect(cleanedUp).toBe(true)
      expect(Cause.failureOption(letters[0]!.cause)).toEqual(Option.some(new Timeout({ after: Duration.seconds(1) })))
    }).pipe(withLifecycle))

  it.scoped("retries typed failures on the schedule and counts attempts; defects are not retried", () =>
    Effect.gen(function*() {
      const letters: Array<WorkerPool.FailedJob<string>> = []
      const attempts: Record<string, number> = {}
      const pool = yield* WorkerPool.make<string, Unavailable>({
        capacity: 4,
        workers: 2,
        retry: Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(2))),
        handler: (payload, job) =>
          Effect.gen(function*() {
            attempts[payload] = job.attempt
            if (payload === "flaky" && job.attempt < 3) return yield* new Unavailable({ attempt: job.attempt })
            if (payload === "down") return yield* new Unavailable({ attempt: job.attempt })
            if (payload === "crash") yield* Effect.die(new Error("crash"))
          }),
        deadLetter: (letter) => Effect.sync(() => letters.push(letter))
      })
      yield* Effect.forEach(["flaky", "down", "crash"], (payload) => pool.submit(payload))
      yield* TestClock.adjust("1 second")
      yield* pool.awaitIdle
      expect(attempts).toEqual({ flaky: 3, down: 3, crash: 1 })
      expect(letters.map((letter) => [letter.job.payload, letter.attempts])).toEqual([["crash", 1], ["down", 3]])
      const stats = yield* pool.stats
      expect([stats.completed, stats.failed, stats.retried]).toEqual([1, 2, 4])
    }).pipe(withLifecycle))

  it.scoped("exposes depth, in flight and outcome counters as Effect metrics tagged with the pool name", () =>
    Effect.gen(function*() {
      const { open, pool } = yield* gatedPool({ name: "metered" })
      yield* Effect.forEach(["a", "b", "c"], (payload) => pool.submit(payload))
      yield* TestClock.adjust(0)
      const metrics = WorkerPool.metrics("metered")
      expect((yield* Metric.value(metrics.depth)).value).toBe(2)
      expect((yield* Metric.value(metrics.inFlight)).value).toBe(1)
      yield* open
      yield* pool.awaitIdle
      expect((yield* Metric.value(metrics.completed)).count).toBe(3)
      expect((yield* Metric.value(metrics.inFlight)).value).toBe(0)
      expect((yield* Metric.value(metrics.depth)).value).toBe(0)
      const exported = (yield* Metric.snapshot).filter((pair) => pair.metricKey.name.startsWith("keel_pool_"))
      expect(exported.length).toBeGreaterThanOrEqual(7)
    }).pipe(withLifecycle))

  it.scoped("the depth gauge equals stats.depth whenever the pool is still: after submits, takes, completions, a drain", () =>
    Effect.gen(function*() {
      const pool = yield* WorkerPool.make<string>({
        name: "depth-gauge",
        capacity: 2,
        workers: 1,
        onShutdown: "handBack",
        handBack: () => Effect.void,
        handler: () => Effect.sleep("1 second")
      })
      const gauge = WorkerPool.metrics("depth-gauge").depth
      // Compared once the pool has drained: a failed expectation inside would leave the drain waiting on TestClock.
      const gauges: Array<number> = []
      const depths: Array<number> = []
      const gaugeMatchesStats = Effect.gen(function*() {
        depths.push((yield* pool.stats).depth)
        gauges.push((yield* Metric.value(gauge)).value)
      })
      yield* Effect.forEach(["a", "b", "c"], (payload) => pool.submit(payload)) // a taken, b and c queued
      const suspended = yield* Effect.fork(pool.submit("d")) // admitted when the worker takes b
      yield* TestClock.adjust(0)
      yield* gaugeMatchesStats
      for (let second = 0; second < 4; second++) { // a, b, c, d complete one a second; each completion a take
        yield* TestClock.adjust("1 second")
        yield* gaugeMatchesStats
      }
      yield* Fiber.join(suspended)
      yield* Effect.forEach(["e", "f", "g"], (payload) => pool.submit(payload)) // e taken, f and g queued
      yield* TestClock.adjust(0)
      yield* gaugeMatchesStats
      const drain = yield* Effect.fork(pool.shutdown) // f and g handed back at once, e finishes
      yield* TestClock.adjust(0)
      yield* gaugeMatchesStats
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(drain)
      yield* gaugeMatchesStats
      expect(gauges).toEqual(depths)
      expect(depths).toEqual([2, 2, 1, 0, 0, 2, 0, 0])
    }).pipe(withLifecycle))
})

describe("WorkerPool shutdown", () => {
  it.effect("drain policy: in-flight and queued jobs finish, the drain reports them", () =>
    Effect.gen(function*() {
      const finished: Array<number> = []
      const result = yield* Effect.gen(function*() {
        const pool = yield* WorkerPool.make<number>({
          capacity: 4,
          workers: 2,
          handler: (n) => Effect.as(Effect.sleep("1 second"), n).pipe(Effect.tap((n) => finished.push(n)))
        })
        yield* Effect.forEach([1, 2, 3, 4, 5], (n) => pool.submit(n))
        const shutdown = yield* Effect.fork(pool.shutdown)
        yield* TestClock.adjust("3 seconds")
        return yield* Fiber.join(shutdown)
      }).pipe(Effect.scoped)
      expect(finished.sort()).toEqual([1, 2, 3, 4, 5])
      expect(result).toEqual({ durationMs: 3_000, finished: 5, unfinished: [] })
    }).pipe(withLifecycle))

  it.effect("handBack policy: in-flight jobs finish, queued ones are handed back unstarted", () =>
    Effect.gen(function*() {
      const handedBack: Array<WorkerPool.Unfinished<number>> = []
      const finished: Array<number> = []
      yield* Effect.gen(function*() {
        const pool = yield* WorkerPool.make<number>({
          capacity: 4,
          workers: 2,
          onShutdown: "handBack",
          handler: (n) => Effect.as(Effect.sleep("1 second"), n).pipe(Effect.tap((n) => finished.push(n))),
          handBack: (jobs) => Effect.sync(() => handedBack.push(...jobs))
        })
        yield* Effect.forEach([1, 2, 3, 4, 5], (n) => pool.submit(n))
        yield* TestClock.adjust(0)
        const shutdown = yield* Effect.fork(pool.shutdown)
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(shutdown)
      }).pipe(Effect.scoped)
      expect(finished.sort()).toEqual([1, 2])
      expect(handedBack.map((item) => [item.job.payload, item.reason])).toEqual([
        [3, "handedBack"],
        [4, "handedBack"],
        [5, "handedBack"]
      ])
    }).pipe(withLifecycle))

  it.effect("closing the Scope drains the pool; shutdown called twice drains once", () =>
    Effect.gen(function*() {
      const finished: Array<number> = []
      const closing = yield* Effect.gen(function*() {
        const pool = yield* WorkerPool.make<number>({
          capacity: 4,
          workers: 1,
          handler: (n) => Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => finished.push(n)))
        })
        yield* Effect.forEach([1, 2], (n) => pool.submit(n))
        const first = yield* Effect.fork(pool.shutdown)
        const second = yield* Effect.fork(pool.shutdown)
        yield* TestClock.adjust("2 seconds")
        expect(yield* Fiber.join(first)).toEqual(yield* Fiber.join(second))
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(closing)
      expect(finished).toEqual([1, 2])
    }).pipe(withLifecycle))

  it.effect("a pool that outlives the run still drains within the drain timeout", () =>
    Effect.gen(function*() {
      const handedBack: Array<WorkerPool.Unfinished<number>> = []
      const closing = yield* Effect.gen(function*() {
        const pool = yield* WorkerPool.make<number>({
          capacity: 1,
          workers: 1,
          handler: () => Effect.never,
          handBack: (jobs) => Effect.sync(() => handedBack.push(...jobs))
        })
        yield* pool.submit(1)
        yield* Lifecycle.run(Effect.void) // the run ends by itself: the phase is now "stopped"
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(closing)
      expect(handedBack.map((item) => [item.job.payload, item.reason])).toEqual([[1, "interrupted"]])
    }).pipe(withLifecycle))

  it.effect("rejects a pool without workers or capacity as a defect at construction", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Effect.scoped(WorkerPool.make({ capacity: 0, workers: 1, handler: () => Effect.void }))
      )
      expect(exit._tag).toBe("Failure")
    }).pipe(withLifecycle))
})
