/**
 * Properties of the hedge middleware under TestClock, over random delays, attempt limits, latencies and
 * outcomes, checked against a model of the documented rule (attempt k+1 starts k·delay into the call while
 * nothing has succeeded and something still runs; the first success wins; the call fails when every started
 * attempt has failed, with the last failure):
 *
 * - never more than `maxAttempts` attempts start, each exactly when the model says;
 * - the result is the model's: the first success, or the last failure;
 * - every attempt still running when the call ends was interrupted, and its interruption was handled
 *   before the call returned; every other loser had failed on its own.
 *
 * Latencies are whole seconds plus 10·(n+1) ms for attempt n and delays whole seconds, so no two events
 * share an instant and the model's order is the only possible one.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, Option, TestClock } from "effect"
import { Middleware, Unavailable } from "keel"
import { PropertyRuns } from "keel/testing"

const { hedge } = Middleware

interface AttemptRecord {
  readonly startedAt: number
  end?: "succeeded" | "failed" | "interrupted"
}

describe("hedge properties", () => {
  it.effect.prop(
    "at most maxAttempts attempts start, the first success wins, and every loser still running is interrupted before the call returns",
    {
      delaySeconds: fc.integer({ min: 0, max: 3 }),
      maxAttempts: fc.integer({ min: 1, max: 4 }),
      plans: fc.array(fc.record({ latencySeconds: fc.integer({ min: 0, max: 5 }), succeeds: fc.boolean() }), {
        minLength: 4,
        maxLength: 4
      })
    },
    ({ delaySeconds, maxAttempts, plans }) =>
      Effect.scoped(Effect.gen(function*() {
        const delay = delaySeconds * 1000
        const latencyOf = (index: number) => plans[index]!.latencySeconds * 1000 + 10 * (index + 1)

        const attempts: Array<AttemptRecord> = []
        const log: Array<string> = []
        const service = (request: string) =>
          Effect.gen(function*() {
            const index = attempts.length
            const record: AttemptRecord = { startedAt: yield* Clock.currentTimeMillis }
            attempts.push(record)
            yield* Effect.sleep(Duration.millis(latencyOf(index))).pipe(
              Effect.onInterrupt(() =>
                Effect.sync(() => {
                  record.end = "interrupted"
                  log.push("interrupted")
                })
              )
            )
            record.end = plans[index]!.succeeds ? "succeeded" : "failed"
            return plans[index]!.succeeds
              ? `${request} by attempt ${index}`
              : yield* Effect.fail(new Unavailable({ reason: `attempt ${index}` }))
          })

        const layer = yield* hedge({ after: Duration.millis(delay), maxAttempts })
        let endedAt = Number.NaN
        const fiber = yield* Effect.fork(
          layer(service)("job").pipe(
            Effect.ensuring(Effect.flatMap(Clock.currentTimeMillis, (now) =>
              Effect.sync(() => {
                endedAt = now
                log.push("returned")
              })))
          )
        )
        yield* TestClock.adjust("1 minute")
        const polled = yield* Fiber.poll(fiber)
        if (Option.isNone(polled)) {
          yield* Fiber.interrupt(fiber)
          return expect.fail("the call should have ended within a minute")
        }

        // The model, event by event.
        const finishOf = (index: number) => index * delay + latencyOf(index)
        let started = 1
        const running = new Set([0])
        let expected: { readonly endedAt: number; readonly exit: Exit.Exit<string, Unavailable> }
        for (;;) {
          const nextStart = started < maxAttempts ? started * delay : Number.POSITIVE_INFINITY
          const finishing = [...running].reduce((soonest, index) => finishOf(index) < finishOf(soonest) ? index : soonest)
          if (nextStart < finishOf(finishing)) {
            running.add(started++)
            continue
          }
          running.delete(finishing)
          if (plans[finishing]!.succeeds) {
            expected = { endedAt: finishOf(finishing), exit: Exit.succeed(`job by attempt ${finishing}`) }
            break
          }
          if (running.size === 0) {
            expected = {
              endedAt: finishOf(finishing),
              exit: Exit.fail(new Unavailable({ reason: `attempt ${finishing}` }))
            }
            break
          }
        }

        expect(attempts.length).toBeLessThanOrEqual(maxAttempts)
        expect(attempts.map((attempt) => attempt.startedAt)).toEqual(
          Array.from({ length: started }, (_, index) => index * delay)
        )
        expect(polled.value).toEqual(expected.exit)
        expect(endedAt).toBe(expected.endedAt)
        attempts.forEach((attempt, index) => {
          const ownEnd = finishOf(index) <= expected.endedAt
            ? (plans[index]!.succeeds ? "succeeded" : "failed")
            : "interrupted"
          expect(attempt.end, `attempt ${index}`).toBe(ownEnd)
        })
        expect(log.at(-1)).toBe("returned")
        expect(log.filter((entry) => entry === "interrupted")).toHaveLength(
          attempts.filter((attempt) => attempt.end === "interrupted").length
        )
      })),
    PropertyRuns.fastCheck(20_260_511)
  )
})
