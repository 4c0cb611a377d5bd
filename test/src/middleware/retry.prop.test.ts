/**
 * Properties of the retry middleware under TestClock, over random call streams, failure counts, policies
 * and deadlines:
 *
 * - Budget, safety: at every instant t at which a retry starts, the retries in the window (t − window, t]
 *   are at most `minPerSecond · windowSeconds + ratio · calls` in that same window — no slack.
 * - Budget, liveness: a retry is refused only if the budget was really spent, counted with one bucket
 *   (window/10) of tolerance on each side, since the budget is bucketed.
 * - Deadline: under `stack(deadline(d), retry)` over a service that always fails, the call ends exactly when
 *   a model of "never sleep past the deadline" says: with the last `Unavailable` as soon as the next attempt
 *   could not start before d, or with `Timeout` at d if an attempt is still running then; never after d.
 * - Nested: with two retry layers under one deadline, the same bounds hold, and no attempt starts at or
 *   after the deadline even when nothing above enforces it (`within` only).
 * - Nested budgets: however deep retry layers nest, and whatever budgets the inner ones have (none, none at
 *   all to spare, or plenty), a call tree over a failing dependency retries exactly as the outermost budget
 *   alone allows: each call from outside deposits once, and every retry at every depth withdraws from it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, Option, Random, Schedule, TestClock } from "effect"
import * as Backoff from "../../../src/Backoff.js"
import { Middleware, Timeout, Unavailable } from "keel"
import { PropertyRuns } from "keel/testing"

const { deadline, retry, stack, within } = Middleware

const jitters: ReadonlyArray<Backoff.Jitter> = ["none", "full", "equal", "decorrelated", "proportional"]

const policyArbitrary = fc.record({
  jitter: fc.constantFrom(...jitters),
  baseMillis: fc.integer({ min: 100, max: 500 }),
  factor: fc.constantFrom(1, 1.5, 2, 3),
  maxMultiple: fc.integer({ min: 1, max: 8 }),
  maxAttempts: fc.option(fc.integer({ min: 1, max: 8 }), { nil: undefined })
})

const policyOf = (drawn: typeof policyArbitrary extends fc.Arbitrary<infer T> ? T : never): Backoff.Policy => ({
  base: Duration.millis(drawn.baseMillis),
  factor: drawn.factor,
  max: Duration.millis(drawn.baseMillis * drawn.maxMultiple),
  jitter: drawn.jitter,
  ...(drawn.maxAttempts === undefined ? {} : { maxAttempts: drawn.maxAttempts })
})

interface AttemptRecord {
  readonly startedAt: number
  endedAt: number
  interrupted: boolean
}

/** Always fails with Unavailable after the next latency of the cycle; records every attempt. */
const alwaysFailing = (latencies: ReadonlyArray<number>) => {
  const attempts: Array<AttemptRecord> = []
  const service = (_: string) =>
    Effect.gen(function*() {
      const record: AttemptRecord = { startedAt: yield* Clock.currentTimeMillis, endedAt: Number.NaN, interrupted: false }
      attempts.push(record)
      const latency = latencies[(attempts.length - 1) % latencies.length]!
      yield* Effect.sleep(Duration.millis(latency)).pipe(
        Effect.onInterrupt(() => Effect.sync(() => record.interrupted = true)),
        Effect.ensuring(Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => record.endedAt = now)))
      )
      return yield* Effect.fail(new Unavailable({ reason: `attempt ${attempts.length}` }))
    })
  return { attempts, service }
}

/** Runs `effect` for `horizon` of virtual time; it must have ended by then (a runaway fails, not hangs). */
const runToEnd = <A, E>(effect: Effect.Effect<A, E>, horizon: Duration.DurationInput = "1 hour") =>
  Effect.gen(function*() {
    let endedAt = Number.NaN
    const fiber = yield* Effect.fork(
      Effect.ensuring(effect, Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => endedAt = now)))
    )
    yield* TestClock.adjust(horizon)
    const polled = yield* Fiber.poll(fiber)
    if (Option.isNone(polled)) {
      yield* Fiber.interrupt(fiber)
      return expect.fail(`the call should have ended within ${Duration.format(Duration.decode(horizon))}`)
    }
    return { exit: polled.value, endedAt }
  })

const nanosecondSlack = 1e-6

/** Deadlines are at most 2 s and attempts at most 400 ms: every call here ends well within this. */
const callHorizon = "5 seconds"

describe("retry budget properties", () => {
  type Event = { readonly kind: "call" | "retry" | "refused"; readonly at: number }

  it.effect.prop(
    "retries never exceed minPerSecond·windowSeconds + ratio·calls in the window ending at any retry, and a refusal means the budget was spent",
    {
      windowSeconds: fc.integer({ min: 1, max: 3 }),
      minPerSecond: fc.constantFrom(0, 0.5, 1),
      ratio: fc.constantFrom(0, 0.1, 0.25, 0.5),
      delayMillis: fc.integer({ min: 1, max: 600 }),
      maxAttempts: fc.integer({ min: 2, max: 5 }),
      calls: fc.array(fc.record({ gap: fc.integer({ min: 0, max: 500 }), failures: fc.integer({ min: 0, max: 4 }) }), {
        minLength: 1,
        maxLength: 25
      })
    },
    ({ calls, delayMillis, maxAttempts, minPerSecond, ratio, windowSeconds }) =>
      Effect.scoped(Effect.gen(function*() {
        const windowMillis = windowSeconds * 1000
        const bucketMillis = windowMillis / 10
        const layer = yield* retry({
          backoff: {
            base: Duration.millis(delayMillis),
            factor: 1,
            max: Duration.millis(delayMillis),
            jitter: "none",
            maxAttempts
          },
          budget: { ratio, minPerSecond, window: Duration.millis(windowMillis) },
          name: "retry-prop-budget"
        })
        const events: Array<Event> = []
        const attemptsByCall = new Map<number, number>()
        const service = (request: { readonly id: number; readonly failures: number }) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const attempt = (attemptsByCall.get(request.id) ?? 0) + 1
            attemptsByCall.set(request.id, attempt)
            if (attempt > 1) events.push({ kind: "retry", at: now })
            return attempt <= request.failures
              ? Effect.fail(new Unavailable({ reason: `call ${request.id} attempt ${attempt}` }))
              : Effect.succeed(request.id)
          })
        const wrapped = layer(service)
        const call = (id: number, failures: number) =>
          Effect.gen(function*() {
            events.push({ kind: "call", at: yield* Clock.currentTimeMillis })
            const exit = yield* Effect.exit(wrapped({ id, failures }))
            if (Exit.isFailure(exit) && attemptsByCall.get(id)! < maxAttempts) {
              events.push({ kind: "refused", at: yield* Clock.currentTimeMillis })
            }
          })
        const driver = Effect.forEach(calls, ({ failures, gap }, id) =>
          Effect.zipRight(gap > 0 ? Effect.sleep(Duration.millis(gap)) : Effect.void, Effect.fork(call(id, failures))))
        yield* runToEnd(driver)
        yield* TestClock.adjust("1 hour")

        const reserve = minPerSecond * windowMillis / 1000
        const count = (upTo: number, kind: Event["kind"], from: number) =>
          events.slice(0, upTo).filter((event) => event.kind === kind && event.at > from).length
        events.forEach((event, index) => {
          if (event.kind === "retry") {
            const windowStart = event.at - windowMillis
            const inWindow = (kind: Event["kind"]) =>
              events.filter((other) => other.kind === kind && other.at > windowStart && other.at <= event.at).length
            expect(inWindow("retry"), `retries in the window ending at ${event.at}`).toBeLessThanOrEqual(
              reserve + ratio * inWindow("call")
            )
          }
          if (event.kind === "refused") {
            const retriesRemembered = count(index, "retry", event.at - windowMillis - bucketMillis)
            const callsSurelyCounted = count(index, "call", event.at - windowMillis + bucketMillis)
            expect(retriesRemembered + 1, `refusal at ${event.at}`).toBeGreaterThan(reserve + ratio * callsSurelyCounted)
          }
        })
      })),
    PropertyRuns.fastCheck(20_260_501)
  )
})

describe("retry under a deadline, properties", () => {
  it.effect.prop(
    "stack(deadline(d), retry) ends exactly when 'never sleep past the deadline' says, and never after d",
    {
      deadlineMillis: fc.integer({ min: 1, max: 2_000 }),
      policy: policyArbitrary,
      seed: fc.integer(),
      latencies: fc.array(fc.integer({ min: 50, max: 400 }), { minLength: 1, maxLength: 6 })
    },
    ({ deadlineMillis, latencies, policy, seed }) =>
      Effect.scoped(Effect.gen(function*() {
        // Half a millisecond off the whole-millisecond grid, so no attempt ends exactly at the deadline.
        const d = deadlineMillis + 0.5
        const backoff = policyOf(policy)
        const delays = yield* Backoff.delays(backoff, 64, { seed })
        const layer = yield* retry({ backoff, budget: false })
        const { attempts, service } = alwaysFailing(latencies)
        const { endedAt, exit } = yield* runToEnd(
          Effect.withRandom(stack(yield* deadline({ after: Duration.millis(d) }), layer)(service)("job"), Random.make(seed)),
          callHorizon
        )

        // The model: attempt i starts at s, fails at s + latency; then either the delay fits before d or
        // the call stops there with that failure.
        let start = 0
        let expected: { readonly attempts: number; readonly endedAt: number; readonly timedOut: boolean }
        for (let index = 0;; index++) {
          const failsAt = start + latencies[index % latencies.length]!
          if (failsAt >= d) {
            expected = { attempts: index + 1, endedAt: d, timedOut: true }
            break
          }
          const delay = delays[index]
          if (delay === undefined || Duration.toMillis(delay) >= d - failsAt) {
            expected = { attempts: index + 1, endedAt: failsAt, timedOut: false }
            break
          }
          start = failsAt + Duration.toMillis(delay)
        }

        expect(attempts).toHaveLength(expected.attempts)
        expect(endedAt).toBeCloseTo(expected.endedAt, 6)
        expect(endedAt).toBeLessThanOrEqual(d + nanosecondSlack)
        if (expected.timedOut) {
          expect(exit).toEqual(Exit.fail(new Timeout({ after: Duration.millis(d) })))
          expect(attempts.at(-1)!.interrupted).toBe(true)
        } else {
          expect(exit).toEqual(Exit.fail(new Unavailable({ reason: `attempt ${expected.attempts}` })))
        }
        expect(attempts.every((attempt) => attempt.startedAt < d)).toBe(true)
      })),
    PropertyRuns.fastCheck(20_260_502)
  )

  it.effect.prop(
    "a deadline above two retry layers bounds the call by d; without enforcement, no attempt starts at or after it",
    {
      deadlineMillis: fc.integer({ min: 1, max: 2_000 }),
      outer: policyArbitrary,
      inner: policyArbitrary,
      seed: fc.integer(),
      latencies: fc.array(fc.integer({ min: 50, max: 400 }), { minLength: 1, maxLength: 6 })
    },
    ({ deadlineMillis, inner, latencies, outer, seed }) =>
      Effect.scoped(Effect.gen(function*() {
        const d = deadlineMillis + 0.5
        const outerLayer = yield* retry({ backoff: policyOf(outer), budget: false })
        const innerLayer = yield* retry({ backoff: policyOf(inner), budget: false })

        const enforced = alwaysFailing(latencies)
        const startedAt = yield* Clock.currentTimeMillis
        const { endedAt, exit } = yield* runToEnd(
          Effect.withRandom(
            stack(yield* deadline({ after: Duration.millis(d) }), outerLayer, innerLayer)(enforced.service)("job"),
            Random.make(seed)
          ),
          callHorizon
        )
        expect(endedAt - startedAt).toBeLessThanOrEqual(d + nanosecondSlack)
        expect(enforced.attempts.every((attempt) => attempt.startedAt - startedAt < d)).toBe(true)
        // A Timeout only when an attempt was running at the deadline: no layer slept into it.
        const last = enforced.attempts.at(-1)!
        if (Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag === "Timeout") {
          expect(endedAt - startedAt).toBeCloseTo(d, 6)
          expect(last.interrupted).toBe(true)
        } else {
          expect(exit).toEqual(Exit.fail(new Unavailable({ reason: `attempt ${enforced.attempts.length}` })))
          expect(endedAt).toBe(last.endedAt)
          expect(endedAt - startedAt).toBeLessThan(d)
        }

        const unenforced = alwaysFailing(latencies)
        const unenforcedFrom = yield* Clock.currentTimeMillis
        yield* runToEnd(
          Effect.withRandom(
            within(Duration.millis(d))(stack(outerLayer, innerLayer)(unenforced.service)("job")),
            Random.make(seed)
          ),
          callHorizon
        )
        expect(unenforced.attempts.every((attempt) => attempt.startedAt - unenforcedFrom < d)).toBe(true)
        expect(unenforced.attempts.every((attempt) => !attempt.interrupted)).toBe(true)
      })),
    PropertyRuns.fastCheck(20_260_503)
  )
})

describe("nested retry layers, properties", () => {
  const layerBudgetArbitrary = fc.record({
    ratio: fc.constantFrom(0, 0.1, 0.25, 0.5, 1),
    minPerSecond: fc.constantFrom(0, 0.5, 1)
  })

  it.effect.prop(
    "however deep retries nest and whatever budgets the inner layers have, a call tree retries exactly as the outermost budget allows",
    {
      outer: fc.record({ budget: layerBudgetArbitrary, retries: fc.integer({ min: 1, max: 4 }) }),
      inner: fc.array(
        fc.record({
          budget: fc.oneof(fc.constant(false as const), layerBudgetArbitrary),
          retries: fc.integer({ min: 1, max: 4 })
        }),
        { maxLength: 3 }
      ),
      bursts: fc.array(fc.record({ gap: fc.integer({ min: 0, max: 500 }), calls: fc.integer({ min: 1, max: 12 }) }), {
        minLength: 1,
        maxLength: 5
      })
    },
    ({ bursts, inner, outer }) =>
      Effect.scoped(Effect.gen(function*() {
        // Calls span at most 2.5 s of a 10 s window: every deposit and every retry stays in it.
        const window = Duration.seconds(10)
        const layerOptions = [outer, ...inner]
        const layers = yield* Effect.forEach(layerOptions, ({ budget, retries }) =>
          retry({
            backoff: Schedule.recurs(retries),
            budget: budget === false ? false : { ...budget, window },
            name: "retry-prop-nested"
          }))
        let attempts = 0
        const dependency = (_: number) =>
          Effect.suspend(() => {
            attempts++
            return Effect.fail(new Unavailable({ reason: `attempt ${attempts}` }))
          })
        const call = stack(...layers)(dependency)

        // The model: one budget, the outermost's, with one deposit a call. A call's retries stop when the
        // budget refuses (every layer above is then refused too) or when every schedule has run out.
        const reserve = outer.budget.minPerSecond * Duration.toMillis(window) / 1000
        const retriesACallCanMake = layerOptions.reduce((product, layer) => product * (layer.retries + 1), 1) - 1
        let deposits = 0
        let retriesSoFar = 0
        for (const burst of bursts) {
          yield* TestClock.adjust(Duration.millis(burst.gap))
          for (let index = 0; index < burst.calls; index++) {
            const attemptsBefore = attempts
            yield* Effect.exit(call(deposits))
            deposits++
            let expectedRetries = 0
            while (
              expectedRetries < retriesACallCanMake && retriesSoFar + 1 <= reserve + outer.budget.ratio * deposits
            ) {
              expectedRetries++
              retriesSoFar++
            }
            expect(attempts - attemptsBefore, `call ${deposits}`).toBe(1 + expectedRetries)
          }
        }
        expect(attempts - deposits).toBeLessThanOrEqual(reserve + outer.budget.ratio * deposits)
      })),
    PropertyRuns.fastCheck(20_260_504)
  )
})
