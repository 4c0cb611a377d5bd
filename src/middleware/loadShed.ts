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
 * in fiber context at all: the limits attach to the services they return a shedding twin (`withShedding`),
 * the same limit refusing where it would wait, and `loadShed()` returns that twin. The FiberRef path
 * remains for a limit further below (under a `timeout`, a refusing `rateLimit`, or any other middleware).
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Fiber from "effect/Fiber"
import type { Middleware, Service } from "./Middleware.js"

/** A limit refused the call instead of letting it wait; retry later, not before `retryAfter` when given. */
export class Overloaded extends Data.TaggedError("Overloaded")<{
  /** Which limit refused and why, in words (e.g. `concurrency limit: waiting queue full`). */
  readonly reason: string
  /**
   * How long to wait before trying again, when the refusing limit knows it; absent otherwise (Keel's
   * `concurrencyLimit` cannot tell when a permit frees up). `withMiddleware` sends it as `Retry-After`,
   * and 1 second when it is absent.
   */
  readonly retryAfter?: Duration.Duration
}> {
  /** `overloaded: <reason>`, followed by ` (retry after <retryAfter>)` when the wait is known. */
  override get message() {
    return this.retryAfter === undefined
      ? `overloaded: ${this.reason}`
      : `overloaded: ${this.reason} (retry after ${Duration.format(this.retryAfter)})`
  }
}

/** One `loadShed()` call's request to the next waiting limit below; `taken` once a limit has seen it. */
interface SheddingRequest {
  taken: boolean
}

const sheddingRequest: FiberRef.FiberRef<SheddingRequest | undefined> = FiberRef.unsafeMake<
  SheddingRequest | undefined
>(undefined)

/**
 * For a limit that would make callers wait: whether the running call asked it to refuse instead. The
 * request is taken, so limits further below (and calls the admitted service makes) wait as usual.
 * Machinery for Keel's limits (`concurrencyLimit`, `rateLimit`); a limit of your own can call it too.
 */
export const takeShedding = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean => {
  const request = fiber.getFiberRef(sheddingRequest)
  if (request === undefined || request.taken) return false
  request.taken = true
  return true
}

const sheddingTwin = Symbol.for("keel/middleware/sheddingTwin")

/** A service as a limit returns it, carrying its twin that refuses instead of waiting. */
type WithSheddingTwin<S> = S & { readonly [sheddingTwin]?: S }

/**
 * Attaches to `service` (a limit's wrapped service) the twin `loadShed()` uses in its place when it wraps
 * the limit directly, and returns `service`. Machinery for Keel's limits; a limit of your own can use it.
 *
 * @typeParam S - The type of the service and of its twin.
 */
export const withShedding = <S extends Service<never, unknown, unknown, unknown>>(service: S, shedding: S): S =>
  Object.assign(service, { [sheddingTwin]: shedding })

/** Whether a shedding request is pending for the running call (for tests and diagnostics). */
export const isShedding: Effect.Effect<boolean> = Effect.map(
  FiberRef.get(sheddingRequest),
  (request) => request !== undefined && !request.taken
)

/**
 * The load-shedding middleware: the first limit below that would make the call wait fails it at once
 * instead (`concurrencyLimit` with `Overloaded`, a waiting `rateLimit` with `RateLimited`). Limits further
 * below, and calls the service itself makes, still wait. Its usual place is right above the limit it
 * applies to.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const handle = (id: number) => Effect.as(Effect.sleep("1 second"), id)
 *
 * const program = Effect.gen(function*() {
 *   const limit = yield* Middleware.concurrencyLimit(2)
 *   const shedding = Middleware.stack(Middleware.loadShed(), limit)(handle)
 *   // Two run; the third fails at once with Overloaded instead of queueing.
 *   return yield* Effect.forEach([1, 2, 3], (id) => Effect.either(shedding(id)), { concurrency: "unbounded" })
 * }).pipe(Effect.scoped)
 * ```
 */
export const loadShed = (): Middleware<Overloaded> =>
<Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Overloaded, R> =>
  (service as WithSheddingTwin<Service<Req, Res, E, R>>)[sheddingTwin] ?? shedBelow(service)

/** The FiberRef path: a shedding request the first waiting limit below takes. */
const shedBelow = <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Overloaded, R> =>
(request) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.withFiberRuntime((fiber) => {
      const outer = fiber.getFiberRef(sheddingRequest)
      const shedding: SheddingRequest = { taken: false }
      return Effect.zipRight(
        FiberRef.set(sheddingRequest, shedding),
        Effect.ensuring(
          restore(service(request)),
          // Taken on the way out too, so a fiber the call forked cannot take it after the call.
          Effect.suspend(() => {
            shedding.taken = true
            return FiberRef.set(sheddingRequest, outer)
          })
        )
      )
    })
  )
