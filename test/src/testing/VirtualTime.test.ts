/**
 * VirtualTime: a program on TestClock runs to its end without the test naming a single instant — sleeps,
 * concurrent sleepers, a Backoff retry, a timeout — at the virtual time it would have taken, and the clock
 * does not move while the program still has work to do; a program that never ends (sleeping or busy) is a
 * `Livelock` after `maxSteps` steps, one waiting for what time cannot bring is `Stalled`; and interrupting
 * the runner interrupts the program and still drives its finalizers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Data, Deferred, Duration, Effect, Exit, Fiber, Option, Queue } from "effect"
import * as Backoff from "../../../src/Backoff.js"
import { Unavailable } from "../../../src/Errors.js"
import { Livelock, Stalled } from "../../../src/testing/VirtualTime.js"
import * as VirtualTime from "../../../src/testing/VirtualTime.js"

class Boom extends Data.TaggedError("Boom")<{ readonly at: number }> {}

/** Virtual milliseconds since `origin`. */
const since = (origin: number) => Effect.map(Clock.currentTimeMillis, (now) => now - origin)

describe("VirtualTime.run", () => {
  it.effect("sleeps of 1 s, 5 s and 1 h complete, each waking at its own virtual instant", () =>
    Effect.gen(function*() {
      const origin = yield* Clock.currentTimeMillis
      const wokeAt: Array<number> = []
      const sleepThenNote = (duration: Duration.DurationInput) =>
        Effect.zipRight(Effect.sleep(duration), Effect.flatMap(since(origin), (at) => Effect.sync(() => wokeAt.push(at))))
      const finishedAt = yield* VirtualTime.run(
        Effect.gen(function*() {
          yield* sleepThenNote("1 second")
          yield* sleepThenNote("5 seconds")
          yield* sleepThenNote("1 hour")
          return yield* since(origin)
        })
      )
      expect(wokeAt).toEqual([1_000, 6_000, 3_606_000])
      expect(finishedAt).toBe(3_606_000)
      expect(yield* since(origin)).toBe(3_606_000)
    }))

  it.effect("concurrent sleepers each wake at their instant; the run ends with the longest", () =>
    Effect.gen(function*() {
      const origin = yield* Clock.currentTimeMillis
      const durations: ReadonlyArray<Duration.DurationInput> = ["3 seconds", "1 second", "2 seconds", "2 seconds"]
      const wokeAt = yield* VirtualTime.run(
        Effect.all(
          durations.map((duration) => Effect.zipRight(Effect.sleep(duration), since(origin))),
          { concurrency: "unbounded" }
        )
      )
      expect(wokeAt).toEqual([3_000, 1_000, 2_000, 2_000])
      expect(yield* since(origin)).toBe(3_000)
    }))

  it.effect("time moves only when nothing else can: a long chain of hand-overs ends before a 1 ms sleep does", () =>
    Effect.gen(function*() {
      const origin = yield* Clock.currentTimeMillis
      const program = Effect.gen(function*() {
        const ping = yield* Queue.unbounded<number>()
        const pong = yield* Queue.unbounded<number>()
        const echo = yield* Effect.fork(Effect.forever(Effect.flatMap(Queue.take(ping), (n) => Queue.offer(pong, n))))
        const sleeper = yield* Effect.fork(Effect.zipRight(Effect.sleep("1 millis"), since(origin)))
        // 1,000 hops between two fibers: far more scheduler rounds than one settle allows.
        for (let round = 0; round < 500; round++) {
          yield* Queue.offer(ping, round)
          yield* Queue.take(pong)
        }
        const handedOverAt = yield* since(origin)
        yield* Fiber.interrupt(echo)
        return { handedOverAt, sleptUntil: yield* Fiber.join(sleeper) }
      })
      expect(yield* VirtualTime.run(program)).toEqual({ handedOverAt: 0, sleptUntil: 1 })
    }))

  it.effect("a retry under a Backoff policy runs through its delays without the test knowing them", () =>
    Effect.gen(function*() {
      const origin = yield* Clock.currentTimeMillis
      const attemptsAt: Array<number> = []
      const flaky = Effect.flatMap(since(origin), (at) => {
        attemptsAt.push(at)
        return attemptsAt.length <= 3 ? Effect.fail(new Unavailable({ reason: "warming up" })) : Effect.succeed("ready")
      })
      const policy = Backoff.exponential({ base: "100 millis", max: "1 second", jitter: "none" })
      expect(yield* VirtualTime.run(Effect.retry(flaky, policy))).toBe("ready")
      expect(attemptsAt).toEqual([0, 100, 300, 700])
    }))

  it.effect("a timeout fires at its virtual deadline", () =>
    Effect.gen(function*() {
      const origin = yield* Clock.currentTimeMillis
      const result = yield* VirtualTime.run(Effect.timeoutOption(Effect.sleep("1 hour"), "1 minute"))
      expect(Option.isNone(result)).toBe(true)
      expect(yield* since(origin)).toBe(60_000)
    }))

  it.effect("the program's own failure comes back as it is; runExit hands back the Exit", () =>
    Effect.gen(function*() {
      const failing = Effect.zipRight(Effect.sleep("2 seconds"), Effect.fail(new Boom({ at: 2_000 })))
      expect(yield* Effect.flip(VirtualTime.run(failing))).toEqual(new Boom({ at: 2_000 }))
      const exit = yield* VirtualTime.runExit(failing)
      expect(exit).toEqual(Exit.fail(new Boom({ at: 2_000 })))
      const succeeding = yield* VirtualTime.runExit(Effect.as(Effect.sleep("1 second"), 42))
      expect(succeeding).toEqual(Exit.succeed(42))
    }))
})

describe("VirtualTime: programs that cannot finish", () => {
  it.effect("a program that sleeps forever is a Livelock after maxSteps advances, and it is interrupted", () =>
    Effect.gen(function*() {
      let ticks = 0
      let interrupted = false
      const forever = Effect.forever(Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => ticks++))).pipe(
        Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
      )
      const error = yield* Effect.flip(VirtualTime.run(forever, { maxSteps: 50 }))
      expect(error).toBeInstanceOf(Livelock)
      expect(error).toMatchObject({ _tag: "Livelock", steps: 50, virtualMillis: 50_000 })
      expect(error.message).toBe("livelock: not done after 50 steps (50s of virtual time)")
      expect(ticks).toBe(50)
      expect(interrupted).toBe(true)
    }))

  it.effect("a program busy without ever sleeping is a Livelock too, with no virtual time passed", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(VirtualTime.run(Effect.forever(Effect.yieldNow()), { maxSteps: 20 }))
      expect(error).toMatchObject({ _tag: "Livelock", steps: 20, virtualMillis: 0 })
    }))

  it.effect("the default limit of 10,000 advances ends a livelock too, in seconds of real time", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(VirtualTime.run(Effect.forever(Effect.sleep("1 millis"))))
      expect(error).toMatchObject({ _tag: "Livelock", steps: 10_000, virtualMillis: 10_000 })
    }))

  it.effect("waiting on a Deferred nobody completes is Stalled, at the virtual time it got stuck", () =>
    Effect.gen(function*() {
      const never = yield* Deferred.make<void>()
      let interrupted = false
      const stuck = Effect.zipRight(Effect.sleep("3 seconds"), Deferred.await(never)).pipe(
        Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
      )
      const error = yield* Effect.flip(VirtualTime.run(stuck))
      expect(error).toBeInstanceOf(Stalled)
      expect(error).toMatchObject({ _tag: "Stalled", virtualMillis: 3_000 })
      expect(error.message).toBe("stalled after 3s of virtual time: waiting, and no sleep is pending")
      expect(interrupted).toBe(true)
    }))

  it.effect("interrupting the runner interrupts the program and drives its finalizers on virtual time", () =>
    Effect.gen(function*() {
      const origin = yield* Clock.currentTimeMillis
      let ticks = 0
      let interruptedAt: number | undefined
      let cleanedUpAt: number | undefined
      const noteTime = (note: (at: number) => void) => Effect.flatMap(since(origin), (at) => Effect.sync(() => note(at)))
      const program = Effect.forever(Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => ticks++))).pipe(
        Effect.onInterrupt(() => noteTime((at) => (interruptedAt = at))),
        Effect.ensuring(Effect.zipRight(Effect.sleep("10 seconds"), noteTime((at) => (cleanedUpAt = at))))
      )
      const runner = yield* Effect.fork(VirtualTime.run(program))
      for (let round = 0; round < 10_000 && ticks < 5; round++) yield* Effect.yieldNow()
      expect(ticks).toBeGreaterThanOrEqual(5)
      const exit = yield* Fiber.interrupt(runner)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(interruptedAt).toBeGreaterThanOrEqual(5_000)
      expect(cleanedUpAt).toBe(interruptedAt! + 10_000)
      const ticksAfterInterrupt = ticks
      yield* VirtualTime.run(Effect.sleep("1 minute"))
      expect(ticks).toBe(ticksAfterInterrupt)
    }))

  it.effect("invalid limits are a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(VirtualTime.run(Effect.void, { maxSteps: -1 }))
      const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(defect).toBeInstanceOf(Cause.IllegalArgumentException)
      expect((defect as Error).message).toBe("VirtualTime.run: maxSteps must be an integer ≥ 0 (got -1)")
    }))
})
