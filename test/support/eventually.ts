/** Waiting for a condition in tests against real servers: polled, and bounded. */
import { Effect, Schedule } from "effect"

/** Reads `read` every 10 ms until `check` holds, for at most two seconds; dies past that. */
export const eventually = <A>(read: Effect.Effect<A>, check: (value: A) => boolean) =>
  read.pipe(
    Effect.filterOrFail(check),
    Effect.retry({ schedule: Schedule.spaced("10 millis"), times: 200 }),
    Effect.timeout("2 seconds"),
    Effect.orDie
  )
