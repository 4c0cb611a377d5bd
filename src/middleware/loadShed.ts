/**
 * loadShed — Tower's LoadShed: under a limit, refuse at once instead of queueing.
 *
 * Tower's LoadShed asks the inner service `poll_ready` and fails the call when it is not ready. An Effect
 * service has no readiness separate from its call (waiting *is* the Effect suspending), so readiness is
 * turned around: `loadShed()` leaves a shedding request in fiber context for the call below it, and a limit
 * that would make the caller wait (`concurrencyLimit`, `rateLimit` in wait mode) takes it and refuses at
 * once instead of waiting. The first such limit takes the request whether it waits or not, so shedding
 * applies to the first waiting limit below `loadShed()` and never leaks into calls the service itself makes
 * to other services (whose own limits should still queue). To shed at two limits of one stack, put a
 * `loadShed()` above each.
 *
 * The request is a small mutable record in a FiberRef rather than a boolean: taking it is a field write,
 * where resetting a boolean for the admitted call would cost a scoped FiberRef change (`Effect.locally`)
 * on every call through the limit.
 *
 * When `loadShed()` wraps a limit directly (`stack(loadShed(), limit, …)`, the usual place) nothing is put
 * in fiber context at all: the limits attach to the services they return a shedding twin, the same limit
 * refusing where it would wait, and `loadShed()` returns that twin. The FiberRef path remains for a limit
 * further below (under a `timeout`, a refusing `rateLimit`, or any other middleware). Both live in
 * `internal/shedding`.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Overloaded } from "../Errors.js"
import { shedBelow, sheddingTwin, type WithSheddingTwin } from "../internal/shedding.js"
import type { Middleware, Service } from "./Middleware.js"

/** What `loadShed` takes: nothing yet; an object so that options can come without changing its shape. */
export interface LoadShedOptions {}

/**
 * The load-shedding middleware: the first limit below that would make the call wait fails it at once
 * instead (`concurrencyLimit` with `Overloaded`, a waiting `rateLimit` with `RateLimited`). Limits further
 * below, and calls the service itself makes, still wait. Its usual place is right above the limit it
 * applies to. It keeps no state: one value serves every stack.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const handle = (id: number) => Effect.as(Effect.sleep("1 second"), id)
 *
 * const program = Effect.gen(function*() {
 *   const shedding = Middleware.stack(
 *     yield* Middleware.loadShed(),
 *     yield* Middleware.concurrencyLimit({ max: 2 })
 *   )(handle)
 *   // Two run; the third fails at once with Overloaded instead of queueing.
 *   return yield* Effect.forEach([1, 2, 3], (id) => Effect.either(shedding(id)), { concurrency: "unbounded" })
 * }).pipe(Effect.scoped)
 * ```
 */
export const loadShed = (
  _options: LoadShedOptions = {}
): Effect.Effect<Middleware<Overloaded>, never, Scope.Scope> => Effect.succeed(shedding)

const shedding: Middleware<Overloaded> = <Req, Res, E, R>(
  service: Service<Req, Res, E, R>
): Service<Req, Res, E | Overloaded, R> =>
  (service as WithSheddingTwin<Service<Req, Res, E, R>>)[sheddingTwin] ?? shedBelow(service)

