/**
 * The promoter: one fiber per queue that moves due delayed jobs (delayed offers, nacks with a delay) from the
 * delayed set to the stream, where takers find them. Redis's clock decides when a job is due, so all processes
 * agree; every queue of the same name promotes, and the promote script makes sure a job moves once.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Calls } from "./calls.js"
import type { Settings } from "./settings.js"
import { bump, type State } from "./state.js"

/** How often due delayed jobs are moved to the stream, at most. */
export const promoteInterval = Duration.millis(50)
/** How many due jobs one promote call moves, at most; when it moved that many, the next call follows at once. */
export const promoteBatch = 100

/** Moves due delayed jobs to the stream, sleeping until the next is due (at most `promoteInterval`). */
export const promoter = (state: State, { run }: Calls, { keys }: Settings) =>
  Effect.gen(function*() {
    while (true) {
      const reply = yield* Effect.either(run("promote", [keys.stream, keys.delayed], [keys.job, promoteBatch]))
      let pause = Duration.toMillis(promoteInterval)
      if (reply._tag === "Right") {
        const [moved, nextMillis] = reply.right as [number, string]
        if (moved > 0) bump(state)
        const next = Number(nextMillis)
        if (moved >= promoteBatch) pause = 0
        else if (next >= 0) pause = Math.min(pause, Math.max(1, next))
      }
      yield* Effect.sleep(Duration.millis(pause))
    }
  })
