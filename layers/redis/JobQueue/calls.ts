/**
 * One queue's calls to Redis. Each call is bounded in time (`callTimeout`) and fails with `QueueUnavailable`;
 * `run` tries a script 3 times in all before failing. The stream and consumer group are created before the
 * first script call, and again after a call found them gone (NOGROUP: someone deleted them).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Redis } from "ioredis"
import { Backoff } from "keel"
import { JobQueue } from "keel/services"
import { call, callTimeout, describeError, evalScript } from "../Connection.js"
import { type ScriptName, scripts } from "./scripts.js"
import type { Settings } from "./settings.js"
import type { State } from "./state.js"

/**
 * A Redis call is tried 3 times in all before `QueueUnavailable`: once, then again at once, then after a backoff.
 * The schedule is only built once a call has failed, as almost every call succeeds the first time.
 */
const retriesAfterFirstFailure = Backoff.exponential<JobQueue.QueueUnavailable>({
  base: Duration.millis(100),
  max: Duration.seconds(1),
  maxAttempts: 2,
  retryOn: () => true
})

/** `call`, tried 3 times in all (see `retriesAfterFirstFailure`). */
export const withRetries = <A, R>(call: Effect.Effect<A, JobQueue.QueueUnavailable, R>) =>
  Effect.catchAll(call, () => Effect.retry(call, retriesAfterFirstFailure))

/** The queue cannot do what was asked, for `reason`. */
export const unavailable = (reason: string) => new JobQueue.QueueUnavailable({ reason })

/** A script call: the script's name (which its errors start with), its KEYS and its ARGV; Redis's reply. */
export type ScriptCall = (
  name: ScriptName,
  keyList: ReadonlyArray<string>,
  args: ReadonlyArray<string | number>
) => Effect.Effect<unknown, JobQueue.QueueUnavailable>

/** The calls of one queue, made by `makeCalls`. */
export interface Calls {
  /**
   * One Redis call (Connection.call) named `what`, failing with QueueUnavailable past `timeout` (by default
   * `callTimeout`) or on an error; a missing group is noted for re-creation. `onAbandoned` receives a reply that
   * comes after the caller stopped waiting.
   */
  readonly attempt: <A>(
    what: string,
    send: () => Promise<A>,
    timeout?: Duration.Duration,
    onAbandoned?: (value: A) => void
  ) => Effect.Effect<A, JobQueue.QueueUnavailable>
  /** One try of a script, the group not made sure of. */
  readonly runScript: (
    name: ScriptName,
    keyList: ReadonlyArray<string>,
    args: ReadonlyArray<string | number>,
    onAbandoned?: (reply: unknown) => void
  ) => Effect.Effect<unknown, JobQueue.QueueUnavailable>
  /** The stream and group exist (created once, again if someone deleted them). */
  readonly ensureGroup: Effect.Effect<void, JobQueue.QueueUnavailable>
  /** One try of a script, the group made sure of first. */
  readonly once: ScriptCall
  /** A script, the group made sure of first, tried 3 times in all. */
  readonly run: ScriptCall
}

/** The calls of the queue with `state` and `settings`, on `client`. */
export const makeCalls = (state: State, client: Redis, { group, keys }: Settings): Calls => {
  const attempt = <A>(
    what: string,
    send: () => Promise<A>,
    timeout: Duration.Duration = callTimeout,
    onAbandoned?: (value: A) => void
  ) =>
    call(what, () =>
      send().catch((error: unknown) => {
        if (describeError(error).startsWith("NOGROUP")) state.groupReady = false
        throw error
      }), { timeout, fail: unavailable, ...(onAbandoned === undefined ? {} : { onAbandoned }) })

  const runScript = (
    name: ScriptName,
    keyList: ReadonlyArray<string>,
    args: ReadonlyArray<string | number>,
    onAbandoned?: (reply: unknown) => void
  ) => attempt(name, () => evalScript(client, scripts[name], keyList, args), callTimeout, onAbandoned)

  const ensureGroup = Effect.suspend(() =>
    state.groupReady ? Effect.void : attempt("XGROUP CREATE", () =>
      client.call("XGROUP", ["CREATE", keys.stream, group, "0", "MKSTREAM"]).catch((error) => {
        if (!describeError(error).startsWith("BUSYGROUP")) throw error
      })).pipe(Effect.tap(() => Effect.sync(() => void (state.groupReady = true))))
  )

  const once: ScriptCall = (name, keyList, args) => Effect.zipRight(ensureGroup, runScript(name, keyList, args))

  const run: ScriptCall = (name, keyList, args) => withRetries(once(name, keyList, args))

  return { attempt, runScript, ensureGroup, once, run }
}
