/**
 * The shedding request: how `loadShed()` asks the first limit below it to refuse a call rather than make it
 * wait. The request is a small mutable record in a FiberRef rather than a boolean: taking it is a field
 * write, where resetting a boolean for the admitted call would cost a scoped FiberRef change
 * (`Effect.locally`) on every call through the limit. Directly over a limit no request is made at all: each
 * limit attaches to the service it returns a twin that refuses instead of waiting (`withShedding`), and
 * `loadShed()` returns that twin.
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Fiber from "effect/Fiber"
import type { Overloaded } from "../Errors.js"
import type { Service } from "../middleware/Middleware.js"

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
 * For Keel's limits (`concurrencyLimit`, `rateLimit`).
 */
export const takeShedding = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean => {
  const request = fiber.getFiberRef(sheddingRequest)
  if (request === undefined || request.taken) return false
  request.taken = true
  return true
}

export const sheddingTwin = Symbol.for("keel/middleware/sheddingTwin")

/** A service as a limit returns it, carrying its twin that refuses instead of waiting. */
export type WithSheddingTwin<S> = S & { readonly [sheddingTwin]?: S }

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

/** The FiberRef path: a shedding request the first waiting limit below takes. */
export const shedBelow = <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Overloaded, R> =>
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
