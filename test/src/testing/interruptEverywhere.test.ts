/**
 * interruptEverywhere: a scenario is run once per suspension point, interrupted there, then once to its end,
 * with its invariants checked after each run. A counter guarded by acquire/release passes at every point; the
 * same counter with one unguarded stretch is caught at the first point inside that stretch, and the error
 * (or, for a check written with `expect`, the defect) names it. Keel's concurrencyLimit keeps every permit
 * whatever point its callers are interrupted at, while a hand-rolled take/use/release over a Semaphore (the
 * shape of the leak once found in `withPermits`) is caught. The search is bounded, and a cleanup that
 * deadlocks once interrupted is reported, not hung.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Cause, Data, Deferred, Effect, Either, Exit, Fiber, Metric, Option } from "effect"
import { Middleware } from "keel"
import {
  interruptEverywhere,
  InvariantBroken,
  type Outcome,
  scenario,
  Stuck,
  TooManySuspensionPoints
} from "../../../src/testing/interruptEverywhere.js"
import { Stalled } from "../../../src/testing/VirtualTime.js"

const { concurrencyLimit, concurrencyLimitMetrics } = Middleware

class CounterLeak extends Data.TaggedError("CounterLeak")<{ readonly held: number }> {
  override get message() {
    return `${this.held} still held`
  }
}

class PermitsLost extends Data.TaggedError("PermitsLost")<{
  readonly inFlight: number
  readonly waiting: number
  readonly startedAtOnce: number
}> {
  override get message() {
    return `in flight ${this.inFlight}, waiting ${this.waiting}, ${this.startedAtOnce} new calls started at once`
  }
}

const checkReleased = (held: () => number) => held() === 0 ? Effect.void : Effect.fail(new CounterLeak({ held: held() }))

const interruptedAtOf = <A, E>(outcomes: ReadonlyArray<Outcome<A, E>>) =>
  outcomes.map((outcome) => Option.getOrUndefined(outcome.interruptedAt))

/** A counter held across three sleeps, given back by acquireUseRelease however `run` ends. */
const guardedCounter = (outcomes: Array<Outcome<void, never>>, builds: { count: number }) =>
  Effect.sync(() => {
    builds.count++
    let held = 0
    return scenario(
      Effect.acquireUseRelease(
        Effect.sync(() => held++),
        () =>
          Effect.all([Effect.sleep("1 second"), Effect.sleep("2 seconds"), Effect.sleep("3 seconds")], {
            discard: true
          }),
        () => Effect.sync(() => held--)
      ),
      (outcome) => {
        outcomes.push(outcome)
        return checkReleased(() => held)
      }
    )
  })

type Stage = "nothing held" | "guarded" | "unguarded" | "done"

/**
 * One sleep with nothing held, one in acquireUseRelease, then an unguarded increment, sleep, decrement: only
 * an interruption inside the last stretch leaks. `checked` records, for each run, where it was interrupted
 * and the stage it had reached.
 */
const leakyCounter = (checked: Array<{ readonly interruptedAt: Option.Option<number>; readonly stage: Stage }>) =>
  Effect.sync(() => {
    let held = 0
    let stage: Stage = "nothing held"
    return scenario(
      Effect.gen(function*() {
        yield* Effect.sleep("1 second")
        stage = "guarded"
        yield* Effect.acquireUseRelease(
          Effect.sync(() => held++),
          () => Effect.sleep("1 second"),
          () => Effect.sync(() => held--)
        )
        stage = "unguarded"
        held++
        yield* Effect.sleep("1 second")
        held--
        stage = "done"
      }),
      ({ interruptedAt }) => {
        checked.push({ interruptedAt, stage })
        return checkReleased(() => held)
      }
    )
  })

/** Settles the fibers the check forks; the check runs on virtual time, so no clock is involved. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

type Limited = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, unknown, R>

/**
 * After a run, however it ended, a limit of `max` permits must have them all free: of a fresh batch of
 * `max + 1` calls, `max` start at once. `inFlight` / `waiting` are read first, where the limit has gauges.
 * The batch is let go, then interrupted, so that a limit that did lose permits fails the check rather than
 * leaving it waiting.
 */
const expectAllPermitsFree = (limited: Limited, max: number, gauges: Effect.Effect<{ inFlight: number; waiting: number }>) =>
  Effect.gen(function*() {
    const { inFlight, waiting } = yield* gauges
    const gate = yield* Deferred.make<void>()
    let started = 0
    const calls = yield* Effect.forEach(
      Array.from({ length: max + 1 }),
      () => Effect.fork(limited(Effect.zipRight(Effect.sync(() => started++), Deferred.await(gate))))
    )
    yield* settle
    const startedAtOnce = started
    yield* Deferred.succeed(gate, undefined)
    yield* settle
    yield* Fiber.interruptAll(calls)
    if (inFlight !== 0 || waiting !== 0 || startedAtOnce !== max) {
      return yield* new PermitsLost({ inFlight, waiting, startedAtOnce })
    }
  })

/** Five calls of different lengths through a limit of two, all started at once. */
const fiveCalls = (limited: Limited) =>
  Effect.all(
    [100, 250, 50, 300, 100].map((millis) => limited(Effect.sleep(millis))),
    { concurrency: "unbounded", discard: true }
  )

describe("interruptEverywhere", () => {
  it.effect("a counter guarded by acquireUseRelease is given back at every suspension point", () =>
    Effect.gen(function*() {
      const outcomes: Array<Outcome<void, never>> = []
      const builds = { count: 0 }
      const report = yield* interruptEverywhere(guardedCounter(outcomes, builds))
      expect(report.suspensionPoints).toBeGreaterThanOrEqual(3)
      expect(report.runs).toBe(report.suspensionPoints + 1)
      expect(builds.count).toBe(report.runs)
      // The k-th run was interrupted at its k-th point; the last one ran to its end.
      expect(interruptedAtOf(outcomes)).toEqual([
        ...Array.from({ length: report.suspensionPoints }, (_, index) => index + 1),
        undefined
      ])
      outcomes.slice(0, -1).forEach((outcome) => expect(Exit.isInterrupted(outcome.exit)).toBe(true))
      expect(outcomes.at(-1)?.exit).toEqual(Exit.void)
    }))

  it.effect("an unguarded increment, sleep, decrement is caught at the first point inside it, and the error names it", () =>
    Effect.gen(function*() {
      const checked: Array<{ readonly interruptedAt: Option.Option<number>; readonly stage: Stage }> = []
      const error = yield* Effect.flip(interruptEverywhere(leakyCounter(checked)))
      // The runs before the last one were interrupted before the unguarded stretch, and the invariant held.
      const caught = checked.at(-1)!
      expect(caught.stage).toBe("unguarded")
      expect(checked.slice(0, -1).map((run) => run.stage)).not.toContain("unguarded")
      expect(checked.map((run) => run.interruptedAt)).toEqual(checked.map((_, index) => Option.some(index + 1)))
      // TestClock's sleep is two points (its bookkeeping, then the wait): the stretch is not reached at once.
      const point = Option.getOrThrow(caught.interruptedAt)
      expect(point).toBeGreaterThan(2)
      expect(error).toBeInstanceOf(InvariantBroken)
      expect(error).toMatchObject({
        _tag: "InvariantBroken",
        interruptedAt: Option.some(point),
        error: new CounterLeak({ held: 1 })
      })
      expect(error.message).toBe(
        `interruptEverywhere: invariant broken after the run interrupted at suspension point ${point}: 1 still held`
      )
    }))

  it.effect("a check written with expect dies with a defect that names the point", () =>
    Effect.gen(function*() {
      const checked: Array<{ readonly interruptedAt: Option.Option<number>; readonly stage: Stage }> = []
      const withExpect = Effect.map(leakyCounter(checked), (leaky) =>
        scenario(leaky.run, (outcome) =>
          Effect.flatMap(Effect.either(leaky.check(outcome)), (released) =>
            Effect.sync(() => {
              expect(Either.isRight(released), "the counter is given back").toBe(true)
            }))))
      const exit = yield* Effect.exit(interruptEverywhere(withExpect))
      const defect = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.dieOption(exit.cause)) : undefined
      const point = Option.getOrThrow(checked.at(-1)!.interruptedAt)
      assert(defect instanceof Error, "the check's failed expect is a defect")
      expect(defect.message).toMatch(
        `interruptEverywhere: the check died after the run interrupted at suspension point ${point}: ` +
          "the counter is given back: expected false to be true"
      )
      expect(defect.cause).toBeInstanceOf(Error)
    }))

  it.effect("Keel's concurrencyLimit loses no permit whatever point its callers are interrupted at", () =>
    Effect.gen(function*() {
      const max = 2
      const name = "interrupt-everywhere-concurrency-limit"
      const metrics = concurrencyLimitMetrics(name)
      const gauges = Effect.all({
        inFlight: Effect.map(Metric.value(metrics.inFlight), (gauge) => gauge.value),
        waiting: Effect.map(Metric.value(metrics.waiting), (gauge) => gauge.value)
      })
      const outcomes: Array<Outcome<void, unknown>> = []
      const report = yield* interruptEverywhere(
        Effect.gen(function*() {
          const limit = yield* concurrencyLimit({ max, name })
          const limited: Limited = (effect) => limit((_: void) => effect)(undefined)
          return scenario(fiveCalls(limited), (outcome) => {
            outcomes.push(outcome)
            return expectAllPermitsFree(limited, max, gauges)
          })
        })
      )
      // Five callers, three of them queued, each sleeping: many points, every one of them tried.
      expect(report.suspensionPoints).toBeGreaterThanOrEqual(10)
      expect(report.runs).toBe(report.suspensionPoints + 1)
      expect(outcomes).toHaveLength(report.runs)
      expect(outcomes.filter((outcome) => Exit.isInterrupted(outcome.exit))).toHaveLength(report.suspensionPoints)
      expect(outcomes.at(-1)?.exit).toEqual(Exit.void)
    }))

  it.effect("the same check catches a hand-rolled take / use / release over a Semaphore", () =>
    Effect.gen(function*() {
      const max = 2
      const error = yield* Effect.flip(interruptEverywhere(
        Effect.gen(function*() {
          const semaphore = yield* Effect.makeSemaphore(max)
          // The permit is not given back when the call is interrupted between take and release.
          const limited: Limited = (effect) =>
            Effect.zipRight(semaphore.take(1), Effect.zipLeft(effect, semaphore.release(1)))
          const noGauges = Effect.succeed({ inFlight: 0, waiting: 0 })
          return scenario(fiveCalls(limited), () => expectAllPermitsFree(limited, max, noGauges))
        })
      ))
      assert(error instanceof InvariantBroken, `expected InvariantBroken, got ${error._tag}`)
      const point = Option.getOrThrow(error.interruptedAt)
      expect(error.error.startedAtOnce).toBeLessThan(max)
      expect(error.message).toContain(`after the run interrupted at suspension point ${point}: in flight 0, waiting 0,`)
    }))

  it.effect("the search is bounded: past maxSuspensionPoints it fails with TooManySuspensionPoints", () =>
    Effect.gen(function*() {
      let checks = 0
      const twentySleeps = Effect.succeed(scenario(
        Effect.forEach(Array.from({ length: 20 }), () => Effect.sleep("1 millis"), { discard: true }),
        () => Effect.sync(() => checks++)
      ))
      const error = yield* Effect.flip(interruptEverywhere(twentySleeps, { maxSuspensionPoints: 5 }))
      expect(error).toBeInstanceOf(TooManySuspensionPoints)
      expect(error).toMatchObject({ maxSuspensionPoints: 5 })
      expect(error.message).toBe(
        "interruptEverywhere: a run has more than 5 suspension points (maxSuspensionPoints)"
      )
      expect(checks).toBe(6)
    }))

  it.effect("a cleanup that deadlocks once interrupted is reported as Stuck, not hung", () =>
    Effect.gen(function*() {
      const deadlocking = Effect.map(Deferred.make<void>(), (neverCompleted) =>
        scenario(Effect.onInterrupt(Effect.sleep("1 second"), () => Deferred.await(neverCompleted)), () => Effect.void))
      const error = yield* Effect.flip(interruptEverywhere(deadlocking))
      assert(error instanceof Stuck, `expected Stuck, got ${error._tag}`)
      expect(error).toMatchObject({ _tag: "Stuck", phase: "run", interruptedAt: Option.some(1) })
      expect(error.reason).toBeInstanceOf(Stalled)
      expect(error.message).toMatch(
        /^interruptEverywhere: the run phase after the run interrupted at suspension point 1 never ended: stalled after/
      )
    }))
})
