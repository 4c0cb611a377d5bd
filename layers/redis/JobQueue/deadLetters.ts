/**
 * The dead letters: listing them, requeueing one, and the warning logged when the list, full at
 * `maxDeadLetters`, drops its oldest to make room (the take and settle scripts report the ids they dropped).
 */
import * as Effect from "effect/Effect"
import type { JobQueue } from "keel/services"
import type { Calls } from "./calls.js"
import type { Settings } from "./settings.js"
import { bump, type State } from "./state.js"

/** Logs a warning for each dead letter a script dropped. */
export const warnDropped = ({ maxDeadLetters, name }: Settings) => (dropped: ReadonlyArray<unknown>) =>
  Effect.forEach(dropped, (id) =>
    Effect.logWarning(`RedisJobQueue ${name}: dead letter ${String(id)} dropped (more than ${maxDeadLetters} kept)`), {
    discard: true
  })

/** The service's `deadLetters`: the dead list with each job's fields, oldest first. */
export const listDeadLetters = ({ run }: Calls, { keys }: Settings) =>
  Effect.map(run("deadLetters", [keys.dead], [keys.job]), (reply) =>
    (reply as ReadonlyArray<[string, string, string, string, string]>).map(([id, payload, attempts, reason, at]) => ({
      id,
      payload: JSON.parse(payload) as JobQueue.Json,
      deliveries: Number(attempts),
      reason,
      at: Number(at)
    })))

/** The service's `requeue`: a dead job ready again with its attempts reset; false when `id` is not dead. */
export const requeue = (state: State, { run }: Calls, { keys }: Settings) => (id: string) =>
  Effect.map(run("requeue", [keys.stream, keys.dead, keys.job + id], [id]), (moved) => {
    if (moved === 1) bump(state)
    return moved === 1
  })
