/**
 * loadShed — Tower's LoadShed: under a limit, refuse at once instead of queueing.
 *
 * Tower's LoadShed asks the inner service `poll_ready` and fails the call when it is not ready. An Effect
 * service has no readiness separate from its call (waiting *is* the Effect suspending), so readiness is
 * turned around: `loadShed()` sets `shedInsteadOfWaiting` for the call below it, and a limit that would
 * make the caller wait (`concurrencyLimit`, `rateLimit` in wait mode) reads it and refuses at once instead.
 * The limit that honours the flag clears it for the call it admits, so shedding applies to the first
 * waiting limit below `loadShed()` and never leaks into calls the service itself makes to other services
 * (whose own limits should still queue). To shed at two limits of one stack, put a `loadShed()` above each.
 */
import { Data, Duration, Effect, FiberRef } from "effect"
import type { Middleware, Service } from "./Middleware.js"

/** A limit refused the call instead of letting it wait; retry later, not before `retryAfter` when given. */
export class Overloaded extends Data.TaggedError("Overloaded")<{
  readonly reason: string
  readonly retryAfter?: Duration.Duration
}> {
  override get message() {
    return this.retryAfter === undefined
      ? `overloaded: ${this.reason}`
      : `overloaded: ${this.reason} (retry after ${Duration.format(this.retryAfter)})`
  }
}

/** True while the caller asked the next limit below to refuse rather than wait. */
export const shedInsteadOfWaiting: FiberRef.FiberRef<boolean> = FiberRef.unsafeMake(false)

/** Runs `effect` with shedding turned off: what a limit does to the call it has admitted. */
export const withoutShedding = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, shedInsteadOfWaiting, false)

/**
 * The load-shedding middleware: the first limit below that would make the call wait fails it at once
 * instead (`concurrencyLimit` with `Overloaded`, a waiting `rateLimit` with `RateLimited`).
 */
export const loadShed = (): Middleware<Overloaded> =>
<Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Overloaded, R> =>
(request) => Effect.locally(service(request), shedInsteadOfWaiting, true)
