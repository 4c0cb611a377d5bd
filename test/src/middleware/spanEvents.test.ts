/**
 * Middleware decisions as events of the caller's span, when tracing is on: what a trace viewer shows of why a
 * request was slow or refused (a timeout fired, a retry waited, a budget ran out, a call was shed, rate-limited
 * or refused by an open breaker). With tracing off, a decision records nothing.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { Middleware, Unavailable } from "keel"
import { recordingTracer } from "../../support/recordingTracer.js"

const failing = () => Effect.fail(new Unavailable({ reason: "down" }))
const hanging = () => Effect.never

/** The events of the span named `name`, as [event name, attributes]. */
const eventsOf = (recording: ReturnType<typeof recordingTracer>, name: string) =>
  recording.named(name).flatMap((span) => span.events.map(([event, , attributes]) => [event, attributes] as const))

describe("middleware decisions as span events", () => {
  it.scoped("timeout, retries, an exhausted budget, shedding, a rate limit and an open breaker are recorded", () => {
    const recording = recordingTracer()
    return Effect.gen(function*() {
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const timedOut = yield* Effect.fork(Effect.withSpan(Effect.exit(timeout(hanging)(undefined)), "timed"))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(timedOut)
      expect(eventsOf(recording, "timed")).toEqual([["keel.timeout", { "keel.timeout_ms": 1_000 }]])

      const retry = yield* Middleware.retry({
        backoff: { base: "100 millis", max: "100 millis", maxAttempts: 3, jitter: "none" },
        budget: { ratio: 0, minPerSecond: 0.1, window: "10 seconds" } // one retry in all
      })
      const retried = yield* Effect.fork(Effect.withSpan(Effect.exit(retry(failing)(undefined)), "retried"))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(retried)
      expect(eventsOf(recording, "retried").map(([event]) => event)).toEqual([
        "keel.retry.scheduled",
        "keel.retry.budget_exhausted"
      ])

      const limit = yield* Middleware.concurrencyLimit({ max: 1, name: "db" })
      const shed = Middleware.stack(yield* Middleware.loadShed(), limit)
      const holder = yield* Effect.fork(limit(hanging)(undefined))
      yield* TestClock.adjust(0)
      yield* Effect.withSpan(Effect.exit(shed(hanging)(undefined)), "shed")
      yield* Fiber.interrupt(holder)
      expect(eventsOf(recording, "shed")).toEqual([
        ["keel.load_shed", { "keel.limit": "db", "keel.rejection.reason": "shed" }]
      ])

      const rateLimit = yield* Middleware.rateLimit({ limit: 1, per: "1 minute", onLimit: "reject" })
      const limited = rateLimit(() => Effect.void)
      yield* limited(undefined)
      yield* Effect.withSpan(Effect.exit(limited(undefined)), "limited")
      expect(eventsOf(recording, "limited").map(([event]) => event)).toEqual(["keel.rate_limited"])

      const breaker = yield* Middleware.circuitBreaker({
        name: "payments",
        policy: { kind: "consecutive", failures: 1 },
        openFor: "30 seconds"
      })
      yield* Effect.exit(breaker(failing)(undefined))
      yield* Effect.withSpan(Effect.exit(breaker(failing)(undefined)), "refused")
      expect(eventsOf(recording, "refused")).toEqual([[
        "keel.circuit_breaker.rejected",
        { "keel.breaker": "payments", "keel.breaker.state": "Open", "keel.rejection.reason": "open", "keel.retry_after_ms": 30_000 }
      ]])
    }).pipe(Effect.withTracer(recording.tracer))
  })

  it.scoped("with no tracer installed (Effect's native one) a decision records nothing on the span", () =>
    Effect.gen(function*() {
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const timedOut = yield* Effect.fork(Effect.withSpan(
        Effect.flatMap(Effect.currentSpan, (span) => Effect.as(Effect.exit(timeout(hanging)(undefined)), span)),
        "timed"
      ))
      yield* TestClock.adjust("1 second")
      const span = (yield* Fiber.join(timedOut)) as unknown as { readonly events: ReadonlyArray<unknown> }
      expect(span.events).toEqual([])
    }))
})
