/**
 * Backoff, case by case: the delays a policy lists and waits, the limits (`maxAttempts`, `maxElapsed`),
 * which failures are retried, Retry-After, construction errors, full jitter's mean, and the policy as
 * WorkerPool's `retry` option. Time is virtual (TestClock) and randomness seeded.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Data, Duration, Effect, Fiber, Random, TestClock } from "effect"
import * as Backoff from "../../src/Backoff.js"
import { Invalid, Timeout, Unavailable } from "../../src/Errors.js"
import * as Lifecycle from "../../src/Lifecycle.js"
import * as WorkerPool from "../../src/WorkerPool.js"

const millisOf = (delays: ReadonlyArray<Duration.Duration>) => delays.map(Duration.toMillis)

/**
 * Runs `Effect.retry` of an effect that fails with `failure(attempt)` every time, under TestClock and
 * `Random.make(seed)`; returns the virtual time of each attempt and the error the caller finally got.
 */
const retryUntilGivenUp = <E>(schedule: Backoff.Policy<E>, failure: (attempt: number) => E, seed = 1) =>
  Effect.gen(function*() {
    const startedAt = yield* Clock.currentTimeMillis
    const attemptsAt: Array<number> = []
    const attempt = Effect.flatMap(Clock.currentTimeMillis, (now) => {
      attemptsAt.push(now - startedAt)
      return Effect.fail(failure(attemptsAt.length))
    })
    const fiber = yield* Effect.retry(attempt, Backoff.exponential(schedule)).pipe(
      Effect.flip,
      Effect.withRandom(Random.make(seed)),
      Effect.fork
    )
    yield* TestClock.adjust("1 day")
    const error = yield* Fiber.join(fiber)
    return { attemptsAt, gaps: attemptsAt.slice(1).map((at, index) => at - attemptsAt[index]!), error }
  })

const unavailable = () => new Unavailable({ reason: "warming up" })

describe("Backoff.delays", () => {
  it.effect("without jitter, the n-th delay is min(max, base·factor^n), n counting retries from 0", () =>
    Effect.gen(function*() {
      const listed = yield* Backoff.delays({ base: "100 millis", factor: 3, max: "5 seconds", jitter: "none" }, 6)
      expect(millisOf(listed)).toEqual([100, 300, 900, 2700, 5000, 5000])
    }))

  it.effect("the default factor is 2 and the default jitter is full: no delay above expo(n)", () =>
    Effect.gen(function*() {
      const policy: Backoff.Policy = { base: "1 second", max: "1 minute" }
      const listed = millisOf(yield* Backoff.delays(policy, 6, { seed: 7 }))
      const unjittered = millisOf(yield* Backoff.delays({ ...policy, jitter: "none" }, 6))
      expect(unjittered).toEqual([1000, 2000, 4000, 8000, 16000, 32000])
      listed.forEach((delay, n) => expect(delay).toBeLessThanOrEqual(unjittered[n]!))
      expect(listed).not.toEqual(unjittered)
    }))

  it.effect("lists fewer delays when the policy stops sooner: maxAttempts − 1 at most", () =>
    Effect.gen(function*() {
      const listed = yield* Backoff.delays({ base: "10 millis", max: "1 second", maxAttempts: 4 }, 100, { seed: 3 })
      expect(listed).toHaveLength(3)
    }))

  it.effect("a seed gives the same list as the ambient Random seeded alike, and as Effect.retry waits", () =>
    Effect.gen(function*() {
      const policy: Backoff.Policy = { base: "50 millis", max: "3 seconds", jitter: "decorrelated", maxAttempts: 8 }
      const listed = millisOf(yield* Backoff.delays(policy, 10, { seed: 42 }))
      const ambient = millisOf(yield* Effect.withRandom(Backoff.delays(policy, 10), Random.make(42)))
      expect(ambient).toEqual(listed)
      const { gaps } = yield* retryUntilGivenUp(policy, unavailable, 42)
      expect(gaps).toHaveLength(listed.length)
      gaps.forEach((gap, index) => expect(gap).toBeCloseTo(listed[index]!, 6))
    }))

  it.effect("a failure given to the listing goes through retryOn and Retry-After", () =>
    Effect.gen(function*() {
      const policy: Backoff.Policy = { base: "100 millis", max: "10 seconds", jitter: "none" }
      const slowDown = new Unavailable({ reason: "busy", retryAfter: Duration.seconds(1) })
      expect(millisOf(yield* Backoff.delays(policy, 6, { failure: slowDown }))).toEqual([1000, 1000, 1000, 1000, 1600, 3200])
      expect(yield* Backoff.delays(policy, 6, { failure: new Invalid({ reason: "bad" }) })).toEqual([])
    }))

  it.effect("a negative or fractional count, or an invalid policy, is a defect", () =>
    Effect.gen(function*() {
      const invalid = yield* Effect.exit(Backoff.delays({ base: "2 seconds", max: "1 second" }, 3))
      expect(invalid._tag === "Failure" && Cause.isDie(invalid.cause)).toBe(true)
      const exit = yield* Effect.exit(Backoff.delays({ base: "1 second", max: "1 second" }, -1))
      expect(exit._tag === "Failure" && Cause.isDie(exit.cause)).toBe(true)
      const fractional = yield* Effect.exit(Backoff.delays({ base: "1 second", max: "1 second" }, 1.5))
      expect(fractional._tag === "Failure" && Cause.isDie(fractional.cause)).toBe(true)
    }))
})

describe("Backoff limits", () => {
  it.effect("maxAttempts counts every attempt, the first included", () =>
    Effect.gen(function*() {
      for (const maxAttempts of [1, 2, 5]) {
        const { attemptsAt, error } = yield* retryUntilGivenUp(
          { base: "1 second", max: "4 seconds", jitter: "none", maxAttempts },
          unavailable
        )
        expect(attemptsAt).toHaveLength(maxAttempts)
        expect(error).toBeInstanceOf(Unavailable)
      }
    }))

  it.effect("with Effect.repeat, maxAttempts counts every run, spaced by the policy's delays", () =>
    Effect.gen(function*() {
      const runsAt: Array<number> = []
      const schedule = Backoff.exponential({
        base: "1 second",
        max: "10 seconds",
        jitter: "none",
        maxAttempts: 4,
        retryOn: () => true
      })
      const fiber = yield* Effect.fork(
        Effect.repeat(Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => runsAt.push(now))), schedule)
      )
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(fiber)
      expect(runsAt).toEqual([0, 1000, 3000, 7000])
    }))

  it.effect("maxElapsed stops exactly when the next delay would end past it", () =>
    Effect.gen(function*() {
      const policy = { base: "100 millis", max: "1 second", jitter: "none" } as const
      // Delays 100, 200, 400, 800: the totals 100, 300, 700, 1500.
      const atLimit = yield* retryUntilGivenUp({ ...policy, maxElapsed: "700 millis" }, unavailable)
      expect(atLimit.attemptsAt).toEqual([0, 100, 300, 700])
      const justBelow = yield* retryUntilGivenUp({ ...policy, maxElapsed: "699 millis" }, unavailable)
      expect(justBelow.attemptsAt).toEqual([0, 100, 300])
      const zero = yield* retryUntilGivenUp({ ...policy, maxElapsed: 0 }, unavailable)
      expect(zero.attemptsAt).toEqual([0])
    }))

  it.effect("maxElapsed counts the time attempts take, from the first failure on", () =>
    Effect.gen(function*() {
      const attemptsAt: Array<number> = []
      // Every attempt after the first takes 150 ms before it fails.
      const attempt = Effect.gen(function*() {
        if (attemptsAt.length > 0) yield* Effect.sleep("150 millis")
        attemptsAt.push(yield* Clock.currentTimeMillis)
        return yield* Effect.fail(unavailable())
      })
      const schedule = Backoff.exponential({ base: "100 millis", max: "100 millis", jitter: "none", maxElapsed: "600 millis" })
      const fiber = yield* Effect.fork(Effect.retry(attempt, schedule))
      yield* TestClock.adjust("1 minute")
      yield* Effect.flip(Fiber.join(fiber))
      // The limit bounds when a retry starts, not when it ends: after the failure at 500 the retry starts
      // at 600 ≤ 600 (and fails at 750); after that one, 850 > 600 stops.
      expect(attemptsAt).toEqual([0, 250, 500, 750])
    }))
})

class Rejected extends Data.TaggedError("Rejected")<{ readonly transient: boolean }> {}

describe("Backoff retry predicate", () => {
  const policy = { base: "10 millis", max: "1 second", jitter: "none", maxAttempts: 4 } as const

  it.effect("Timeout and Unavailable are retried; Invalid never is", () =>
    Effect.gen(function*() {
      const timedOut = yield* retryUntilGivenUp(policy, () => new Timeout({ after: Duration.seconds(1) }))
      expect(timedOut.attemptsAt).toHaveLength(4)
      const down = yield* retryUntilGivenUp(policy, unavailable)
      expect(down.attemptsAt).toHaveLength(4)
      const invalid = yield* retryUntilGivenUp(policy, () => new Invalid({ reason: "no such user" }))
      expect(invalid.attemptsAt).toHaveLength(1)
      expect(invalid.error).toEqual(new Invalid({ reason: "no such user" }))
    }))

  it.effect("by default any other error is not retried", () =>
    Effect.gen(function*() {
      expect((yield* retryUntilGivenUp(policy, () => new Rejected({ transient: true }))).attemptsAt).toHaveLength(1)
      expect((yield* retryUntilGivenUp(policy, () => new Error("boom"))).attemptsAt).toHaveLength(1)
      expect((yield* retryUntilGivenUp(policy, () => "boom")).attemptsAt).toHaveLength(1)
      expect([
        Backoff.isRetryable(new Timeout({ after: Duration.seconds(1) })),
        Backoff.isRetryable(unavailable()),
        Backoff.isRetryable(new Invalid({ reason: "x" })),
        Backoff.isRetryable(undefined)
      ]).toEqual([true, true, false, false])
    }))

  it.effect("a custom retryOn decides for errors of your own, attempt by attempt", () =>
    Effect.gen(function*() {
      const retryOn = (error: Rejected) => error.transient
      const transient = yield* retryUntilGivenUp({ ...policy, retryOn }, () => new Rejected({ transient: true }))
      expect(transient.attemptsAt).toHaveLength(4)
      // Transient twice, then permanent: the third attempt is the last.
      const turnsPermanent = yield* retryUntilGivenUp(
        { ...policy, retryOn },
        (attempt) => new Rejected({ transient: attempt < 3 })
      )
      expect(turnsPermanent.attemptsAt).toHaveLength(3)
      expect(turnsPermanent.error).toEqual(new Rejected({ transient: false }))
    }))
})

describe("Backoff Retry-After", () => {
  it.effect("a failure carrying retryAfter makes the next delay at least that long", () =>
    Effect.gen(function*() {
      const slowDown = new Unavailable({ reason: "rate limited", retryAfter: Duration.seconds(2) })
      const fixed = yield* retryUntilGivenUp(
        { base: "10 millis", max: "10 seconds", jitter: "none", maxAttempts: 3 },
        () => slowDown
      )
      expect(fixed.gaps).toEqual([2000, 2000])

      const policy: Backoff.Policy = { base: "200 millis", max: "10 seconds", maxAttempts: 8 }
      const shortRetryAfter = new Unavailable({ reason: "rate limited", retryAfter: Duration.millis(500) })
      const jittered = yield* retryUntilGivenUp(policy, () => shortRetryAfter, 11)
      expect(jittered.gaps).toHaveLength(7)
      for (const gap of jittered.gaps) expect(gap).toBeGreaterThanOrEqual(500 - 1e-9)
      // Where the drawn delay is longer, it is kept: the gaps are the listing for that same failure.
      const listed = millisOf(yield* Backoff.delays(policy, 7, { seed: 11, failure: shortRetryAfter }))
      jittered.gaps.forEach((gap, index) => expect(gap).toBeCloseTo(listed[index]!, 6))
      expect(listed.some((delay) => delay > 500)).toBe(true)
    }))

  it.effect("retryAfter beyond max stops retrying; the caller gets the failure with its retryAfter", () =>
    Effect.gen(function*() {
      const slowDown = new Unavailable({ reason: "maintenance", retryAfter: Duration.minutes(5) })
      const { attemptsAt, error } = yield* retryUntilGivenUp(
        { base: "1 second", max: "1 minute", maxAttempts: 3 },
        () => slowDown
      )
      expect(attemptsAt).toEqual([0])
      expect(error).toEqual(slowDown)
    }))

  it.effect("retryAfter equal to max is still waited", () =>
    Effect.gen(function*() {
      const slowDown = new Unavailable({ reason: "busy", retryAfter: Duration.minutes(1) })
      const { gaps } = yield* retryUntilGivenUp({ base: "1 second", max: "1 minute", maxAttempts: 2 }, () => slowDown)
      expect(gaps).toEqual([60_000])
    }))

  it.effect("decorrelated jitter grows from the delay actually waited, Retry-After included", () =>
    Effect.gen(function*() {
      const policy: Backoff.Policy = { base: "100 millis", max: "1 minute", jitter: "decorrelated" }
      const slowDown = new Unavailable({ reason: "busy", retryAfter: Duration.seconds(10) })
      const listed = millisOf(yield* Backoff.delays(policy, 6, { seed: 5, failure: slowDown }))
      expect(listed[0]).toBe(10_000)
      let previous = 100
      for (const delay of listed) {
        expect(delay).toBeGreaterThanOrEqual(10_000)
        expect(delay).toBeLessThanOrEqual(Math.max(10_000, Math.min(60_000, previous * 3)))
        previous = delay
      }
      // Grown from the 10 s waited, not from the ≤ 300 ms drawn before it.
      expect(listed.some((delay) => delay > 10_000)).toBe(true)
    }))
})

describe("Backoff construction", () => {
  const rejects = (policy: Backoff.Policy, mentioning: RegExp) => {
    let thrown: unknown
    try {
      Backoff.exponential(policy)
    } catch (error) {
      thrown = error
    }
    expect(Cause.isIllegalArgumentException(thrown)).toBe(true)
    expect((thrown as Error).message).toMatch(mentioning)
  }

  it("an invalid policy throws IllegalArgumentException naming the field", () => {
    rejects({ base: 0, max: "1 second" }, /base/)
    rejects({ base: Duration.infinity, max: Duration.infinity }, /base/)
    rejects({ base: "1 second", max: "1 second", factor: 0.5 }, /factor/)
    rejects({ base: "1 second", max: "1 second", factor: Number.NaN }, /factor/)
    rejects({ base: "2 seconds", max: "1 second" }, /max/)
    rejects({ base: "1 second", max: "1 second", maxAttempts: 0 }, /maxAttempts/)
    rejects({ base: "1 second", max: "1 second", maxAttempts: 1.5 }, /maxAttempts/)
    rejects({ base: "1 second", max: "1 second", jitter: "random" as Backoff.Jitter }, /jitter/)
    expect(() => Backoff.exponential({ base: "1 second", max: "1 second", factor: 1, maxAttempts: 1 })).not.toThrow()
  })
})

describe("Backoff full jitter", () => {
  it.effect("over 20 000 samples, the mean of the n-th delay is within 5% of expo(n)/2", () =>
    Effect.gen(function*() {
      const samples = 20_000
      for (const n of [0, 2, 5]) {
        let total = 0
        for (let sample = 0; sample < samples; sample++) {
          const listed = yield* Backoff.delays({ base: "100 millis", max: "1 hour" }, n + 1)
          total += Duration.toMillis(listed[n]!)
        }
        const expectedMean = (100 * 2 ** n) / 2
        expect(Math.abs(total / samples - expectedMean) / expectedMean).toBeLessThan(0.05)
      }
    }).pipe(Effect.withRandom(Random.make(2026))))
})

describe("Backoff as WorkerPool's retry option", () => {
  it.scoped("a job that is Unavailable twice completes on its third attempt; an Invalid job is not retried", () =>
    Effect.gen(function*() {
      const outcomes: Array<WorkerPool.Outcome<string>> = []
      const pool = yield* WorkerPool.make<string, Unavailable | Invalid>({
        capacity: 4,
        workers: 1,
        retry: Backoff.exponential({ base: "100 millis", max: "1 second", maxAttempts: 5 }),
        handler: (payload, job) =>
          payload === "bad"
            ? Effect.fail(new Invalid({ reason: "cannot parse" }))
            : job.attempt <= 2
            ? Effect.fail(new Unavailable({ reason: "warming up" }))
            : Effect.void,
        deadLetter: () => Effect.void,
        onOutcome: (outcome) => Effect.sync(() => outcomes.push(outcome))
      })
      yield* pool.submit("flaky")
      yield* pool.submit("bad")
      yield* TestClock.adjust("10 seconds")
      yield* pool.awaitIdle
      expect(outcomes.map((outcome) =>
        outcome._tag === "Failed"
          ? [outcome._tag, outcome.failure.job.payload, outcome.failure.attempts]
          : outcome._tag === "Completed"
          ? [outcome._tag, outcome.job.payload, outcome.attempts]
          : [outcome._tag]
      )).toEqual([["Completed", "flaky", 3], ["Failed", "bad", 1]])
      const stats = yield* pool.stats
      expect([stats.completed, stats.failed, stats.retried]).toEqual([1, 1, 2])
    }).pipe(Effect.provide(Lifecycle.layer({ drainTimeout: "10 seconds" }))))
})
