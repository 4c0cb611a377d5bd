/**
 * Properties of Backoff over every jitter kind, random seeds and policies: each delay lies within its
 * formula's bounds and never above `max`; a seed reproduces the sequence; `Effect.retry` under TestClock
 * waits exactly the listed delays and stops exactly when `maxAttempts` or `maxElapsed` says. The
 * expectations are computed here from the formulas, not taken from the module.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, FastCheck as fc, Fiber, Random, TestClock } from "effect"
import * as Backoff from "../../src/Backoff.js"
import { Unavailable } from "../../src/Errors.js"
import { PropertyRuns } from "keel/testing"

const jitters: ReadonlyArray<Backoff.Jitter> = ["none", "full", "equal", "decorrelated", "proportional"]

const policyArbitrary = {
  jitter: fc.constantFrom(...jitters),
  seed: fc.integer(),
  baseMillis: fc.integer({ min: 1, max: 2_000 }),
  factor: fc.double({ min: 1, max: 4, noNaN: true }),
  maxMultiple: fc.double({ min: 1, max: 500, noNaN: true })
}


const nanosecond = 1e-6

/** Float slack for sums of fractional milliseconds. */
const slack = 1e-6

const attempting = (policy: Backoff.Policy, seed: number) =>
  Effect.gen(function*() {
    const startedAt = yield* Clock.currentTimeMillis
    const attemptsAt: Array<number> = []
    const attempt = Effect.flatMap(Clock.currentTimeMillis, (now) => {
      attemptsAt.push(now - startedAt)
      return Effect.fail(new Unavailable({ reason: "down" }))
    })
    const fiber = yield* Effect.retry(attempt, Backoff.exponential(policy)).pipe(
      Effect.flip,
      Effect.withRandom(Random.make(seed)),
      Effect.fork
    )
    yield* TestClock.adjust("1 day")
    yield* Fiber.join(fiber)
    return { attemptsAt, gaps: attemptsAt.slice(1).map((at, index) => at - attemptsAt[index]!) }
  })

describe("Backoff properties", () => {
  it.effect.prop(
    "every delay lies within its jitter formula's bounds and never above max",
    { ...policyArbitrary, count: fc.integer({ min: 1, max: 25 }) },
    ({ baseMillis, count, factor, jitter, maxMultiple, seed }) =>
      Effect.gen(function*() {
        // The cap as the Duration the policy holds (whole nanoseconds).
        const maxMillis = Duration.toMillis(Duration.millis(baseMillis * maxMultiple))
        const listed = yield* Backoff.delays(
          { base: Duration.millis(baseMillis), factor, max: Duration.millis(maxMillis), jitter },
          count,
          { seed }
        )
        expect(listed).toHaveLength(count)
        let previous = baseMillis
        listed.map(Duration.toMillis).forEach((delay, n) => {
          const expo = Math.min(maxMillis, baseMillis * factor ** n)
          const [lower, upper] = jitter === "none"
            ? [expo, expo]
            : jitter === "full"
            ? [0, expo]
            : jitter === "equal"
            ? [expo / 2, expo]
            : jitter === "decorrelated"
            ? [baseMillis, Math.min(maxMillis, previous * 3)]
            : [0.8 * expo, Math.min(maxMillis, 1.2 * expo)]
          // A Duration holds whole nanoseconds: the formula's bounds hold to within one.
          expect(delay).toBeGreaterThanOrEqual(lower - nanosecond)
          expect(delay).toBeLessThanOrEqual(upper + nanosecond)
          expect(delay).toBeLessThanOrEqual(maxMillis)
          previous = delay
        })
      }),
    PropertyRuns.fastCheck(20261201)
  )

  it.effect.prop(
    "the same seed lists the same sequence, given as an option or as the ambient Random",
    { ...policyArbitrary, count: fc.integer({ min: 1, max: 20 }) },
    ({ baseMillis, count, factor, jitter, maxMultiple, seed }) =>
      Effect.gen(function*() {
        const policy: Backoff.Policy = {
          base: Duration.millis(baseMillis),
          factor,
          max: Duration.millis(baseMillis * maxMultiple),
          jitter
        }
        const first = (yield* Backoff.delays(policy, count, { seed })).map(Duration.toMillis)
        const again = (yield* Backoff.delays(policy, count, { seed })).map(Duration.toMillis)
        const ambient = (yield* Effect.withRandom(Backoff.delays(policy, count), Random.make(seed))).map(Duration.toMillis)
        expect(again).toEqual(first)
        expect(ambient).toEqual(first)
      }),
    PropertyRuns.fastCheck(20261202)
  )

  it.effect.prop(
    "Effect.retry makes exactly maxAttempts attempts, separated by the listed delays",
    { ...policyArbitrary, maxAttempts: fc.integer({ min: 1, max: 8 }) },
    ({ baseMillis, factor, jitter, maxAttempts, maxMultiple, seed }) =>
      Effect.gen(function*() {
        const policy: Backoff.Policy = {
          base: Duration.millis(baseMillis),
          factor,
          max: Duration.millis(baseMillis * maxMultiple),
          jitter,
          maxAttempts
        }
        const { attemptsAt, gaps } = yield* attempting(policy, seed)
        expect(attemptsAt).toHaveLength(maxAttempts)
        const listed = (yield* Backoff.delays(policy, 100, { seed })).map(Duration.toMillis)
        expect(listed).toHaveLength(maxAttempts - 1)
        gaps.forEach((gap, index) => expect(Math.abs(gap - listed[index]!)).toBeLessThan(slack))
      }),
    PropertyRuns.fastCheck(20261203)
  )

  it.effect.prop(
    "maxElapsed: retrying stops exactly when the next delay would end past it, and never waits beyond it",
    {
      jitter: fc.constantFrom(...jitters),
      seed: fc.integer(),
      baseMillis: fc.integer({ min: 10, max: 500 }),
      factor: fc.double({ min: 1, max: 3, noNaN: true }),
      maxMultiple: fc.integer({ min: 1, max: 50 }),
      maxElapsedMillis: fc.integer({ min: 0, max: 10_000 }),
      maxAttempts: fc.integer({ min: 2, max: 30 })
    },
    ({ baseMillis, factor, jitter, maxAttempts, maxElapsedMillis, maxMultiple, seed }) =>
      Effect.gen(function*() {
        const unlimited: Backoff.Policy = {
          base: Duration.millis(baseMillis),
          factor,
          max: Duration.millis(baseMillis * maxMultiple),
          jitter,
          maxAttempts
        }
        // The limit does not change which random numbers are drawn, so the unlimited listing with the
        // same seed gives the delays; the expected retries are its longest prefix that fits.
        const unlimitedDelays = (yield* Backoff.delays(unlimited, maxAttempts, { seed })).map(Duration.toMillis)
        let expectedRetries = 0
        let total = 0
        for (const delay of unlimitedDelays) {
          if (total + delay > maxElapsedMillis) break
          total += delay
          expectedRetries++
        }
        const { attemptsAt } = yield* attempting({ ...unlimited, maxElapsed: Duration.millis(maxElapsedMillis) }, seed)
        expect(attemptsAt).toHaveLength(expectedRetries + 1)
        expect(attemptsAt[attemptsAt.length - 1]!).toBeLessThanOrEqual(maxElapsedMillis + slack)
      }),
    PropertyRuns.fastCheck(20261204)
  )
})
