/**
 * `Effect.retry(effect, schedule)` for effects that usually succeed the first time: a worker pool's jobs.
 *
 * Effect's `retry` makes a schedule driver (two Refs and the iteration metadata it provides to the effect)
 * before the first attempt, on every call; for a no-op job that was three times the cost of the rest of the
 * pool's bookkeeping. Here the first attempt runs bare and the driver is made at its first failure, which is
 * then the schedule's first input, exactly as `retry` would feed it. What the effect sees differs in one way:
 * Effect's `CurrentIterationMetadata` is not provided to it.
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

export const retryAfterFailure = <A, E, R, Out, R2>(
  effect: Effect.Effect<A, E, R>,
  schedule: Schedule.Schedule<Out, E, R2>
): Effect.Effect<A, E, R | R2> =>
  Effect.catchAll(effect, (first) =>
    Effect.flatMap(Schedule.driver(schedule), (driver) => {
      const retryOrFail = (error: E): Effect.Effect<A, E, R | R2> =>
        Effect.matchEffect(driver.next(error), {
          onFailure: () => Effect.fail(error),
          onSuccess: () => Effect.catchAll(effect, retryOrFail)
        })
      return retryOrFail(first)
    }))
