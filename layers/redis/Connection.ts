/**
 * What Keel's Redis backends share about talking to Redis: opening a connection that fails fast while Redis is
 * away, recognising a client the caller owns, running a Lua script by its SHA, bounding one call in time, and
 * closing within a bound.
 *
 * Bounds are timers of the event loop, not sleeps on the Clock: they measure a network wait, which virtual time
 * does not shorten, and they end the wait without interrupting anything, so they hold inside uninterruptible
 * regions (finalizers, a worker recording an outcome) where `Effect.timeout` could not stop a Redis that does not
 * answer (hung, or behind a partition).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { Redis } from "ioredis"
import { createHash } from "node:crypto"

/** Longest wait for one Redis reply before the call counts as failed. */
export const callTimeout = Duration.seconds(2)

/** A failure as text for a `reason`: an Error's message, or anything else as `String` renders it. */
export const describeError = (error: unknown) => (error instanceof Error ? error.message : String(error))

/** A client the caller owns (of whichever copy of ioredis), rather than `{ url }`. */
export const isClient = (redis: Redis | { readonly url: string }): redis is Redis =>
  typeof (redis as Redis).evalsha === "function"

/** The ioredis options of every connection these backends open: fail fast while Redis is away. */
export const connectionOptions = {
  // While Redis is away a command fails at the next failed reconnection (at most 500 ms later) instead of
  // waiting in the offline queue for Redis to return; at start it still waits for the first connection.
  maxRetriesPerRequest: 0,
  connectTimeout: 2_000,
  retryStrategy: (times: number) => Math.min(50 * times, 500)
}

/** Failures reach the callers through their commands; without a listener ioredis would print each one. */
export const quiet = (connection: Redis): Redis => connection.on("error", () => {})

/** A connection of our own to `url`, with `connectionOptions` (and `extra`). */
export const open = (url: string, extra: Partial<typeof connectionOptions> & { enableAutoPipelining?: boolean } = {}) =>
  quiet(new Redis(url, { ...connectionOptions, ...extra }))

/** A Lua script with its SHA-1, so it can be run by EVALSHA. */
export interface Script {
  /** The script's text. */
  readonly lua: string
  /** The SHA-1 of `lua`, in hex, as Redis names a loaded script. */
  readonly sha: string
}

/** `lua` with its SHA-1, ready for `evalScript`. */
export const script = (lua: string): Script => ({ lua, sha: createHash("sha1").update(lua).digest("hex") })

/** Runs `script` by its SHA, sending its text only when Redis does not have it yet (NOSCRIPT). */
export const evalScript = (
  client: Redis,
  { lua, sha }: Script,
  keys: ReadonlyArray<string>,
  args: ReadonlyArray<string | number>
): Promise<unknown> =>
  client.evalsha(sha, keys.length, ...keys, ...args).catch((error: unknown) =>
    describeError(error).startsWith("NOSCRIPT") ? client.eval(lua, keys.length, ...keys, ...args) : Promise.reject(error)
  )

/** Options of `call`, for a call replying `A` that fails with `E`. */
export interface CallOptions<A, E> {
  /** Longest wait for the reply. */
  readonly timeout: Duration.Duration
  /** The typed error for a failed call, from a reason that starts with `what`. */
  readonly fail: (reason: string) => E
  /**
   * Receives a reply that came (or was delivered but never taken up) after the waiter was interrupted, so that
   * what the call obtained (a lease) can be given back.
   */
  readonly onAbandoned?: (value: A) => void
}

// The bounds of all calls in flight share one timer: a timer per call costs more than the rest of the call.
interface Bounded {
  readonly deadline: number
  readonly expire: () => void
}
const bounded = new Set<Bounded>()
/** How often calls in flight are checked against their bound: a bound may be overrun by up to this much. */
const boundCheckMillis = 50
let boundChecker: ReturnType<typeof setInterval> | undefined
const checkBounds = () => {
  const now = Date.now()
  for (const inFlight of bounded) {
    if (inFlight.deadline > now) continue
    bounded.delete(inFlight)
    inFlight.expire()
  }
  if (bounded.size === 0 && boundChecker !== undefined) {
    clearInterval(boundChecker)
    boundChecker = undefined
  }
}
const bound = (millis: number, expire: () => void): Bounded => {
  const inFlight = { deadline: Date.now() + millis, expire }
  bounded.add(inFlight)
  boundChecker ??= setInterval(checkBounds, boundCheckMillis)
  return inFlight
}

/**
 * One Redis call: its reply, or `fail(reason)` on an error or after `timeout` (checked every 50 ms). The wait
 * is a callback completed by the reply or by the shared bound check, at no fiber or timer per call; it can be
 * interrupted.
 */
export const call = <A, E>(what: string, send: () => Promise<A>, options: CallOptions<A, E>) =>
  Effect.async<A, E>((resume) => {
    let done = false
    let abandoned = false
    let delivered: { readonly value: A } | undefined
    const finish = (exit: Effect.Effect<A, E>) => {
      if (done || abandoned) return
      done = true
      bounded.delete(limit)
      resume(exit)
    }
    const failed = (reason: string) => finish(Effect.fail(options.fail(`${what}: ${reason}`)))
    const limit = bound(
      Duration.toMillis(options.timeout),
      () => failed(`no reply within ${Duration.format(options.timeout)}`)
    )
    const succeeded = (value: A) => {
      if (abandoned) return options.onAbandoned?.(value)
      delivered = { value }
      finish(Effect.succeed(value))
    }
    try {
      send().then(succeeded, (error) => failed(describeError(error)))
    } catch (error) {
      failed(describeError(error))
    }
    // Without `onAbandoned` an interrupted wait needs no canceler (its reply is dropped, its bound lapses);
    // with it, the canceler hands a reply that comes too late to `onAbandoned`.
    if (options.onAbandoned === undefined) return
    const onAbandoned = options.onAbandoned
    return Effect.sync(() => {
      abandoned = true
      bounded.delete(limit)
      if (delivered !== undefined) onAbandoned(delivered.value)
    })
  })

/** How long a closing connection waits for QUIT's reply, at most. */
export const quitWithinMillis = 500

/** QUIT, then the socket dropped either way: a shutdown is never held up by Redis for more than `millis`. */
export const quit = (connection: Redis, millis = quitWithinMillis): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let done = false
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(timer)
      connection.disconnect()
      resume(Effect.void)
    }
    const timer = setTimeout(finish, millis)
    connection.quit().then(finish, finish)
  })
