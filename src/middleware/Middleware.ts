/**
 * Middleware — Tower's Service and Layer, in Effect.
 *
 * A service is a function from a request to an Effect of a response (Tower's `Service::call`; readiness is
 * the Effect itself suspending). A middleware maps a service to a service (Tower's `Layer`) and may add
 * errors of its own (`Timeout`, `RateLimited`, …) and requirements. `stack(a, b, c)` composes in the order
 * written, outermost first, as `ServiceBuilder::new().layer(a).layer(b).layer(c)` does: a request passes
 * through `a`, then `b`, then `c`, then the service. Middleware that hold state (a token bucket, a breaker)
 * are built by an Effect in a Scope and then used like the rest.
 */
import { Effect, Metric } from "effect"
import { Invalid } from "../Errors.js"

/** Calls a middleware refused, for every middleware: tagged `middleware=<name>` and `reason`. */
export const middlewareRejections = Metric.counter("keel_middleware_rejections_total", {
  description: "calls a middleware refused",
  incremental: true
})

/** Calls waiting at a limit (a concurrency limit's queue, a rate limit's sleepers), tagged `middleware=<name>`. */
export const middlewareWaiting = Metric.gauge("keel_middleware_waiting", { description: "calls queued at a limit" })

/** A request in, an Effect of a response out. */
export type Service<Req, Res, E = never, R = never> = (request: Req) => Effect.Effect<Res, E, R>

/** Wraps any service, adding the errors `EAdd` and the requirements `RAdd`. */
export type Middleware<EAdd = never, RAdd = never> = <Req, Res, E, R>(
  service: Service<Req, Res, E, R>
) => Service<Req, Res, E | EAdd, R | RAdd>

/** Composes middleware outermost first (ServiceBuilder order). */
export function stack<E1, R1>(m1: Middleware<E1, R1>): Middleware<E1, R1>
export function stack<E1, R1, E2, R2>(m1: Middleware<E1, R1>, m2: Middleware<E2, R2>): Middleware<E1 | E2, R1 | R2>
export function stack<E1, R1, E2, R2, E3, R3>(
  m1: Middleware<E1, R1>,
  m2: Middleware<E2, R2>,
  m3: Middleware<E3, R3>
): Middleware<E1 | E2 | E3, R1 | R2 | R3>
export function stack<E1, R1, E2, R2, E3, R3, E4, R4>(
  m1: Middleware<E1, R1>,
  m2: Middleware<E2, R2>,
  m3: Middleware<E3, R3>,
  m4: Middleware<E4, R4>
): Middleware<E1 | E2 | E3 | E4, R1 | R2 | R3 | R4>
export function stack<E1, R1, E2, R2, E3, R3, E4, R4, E5, R5>(
  m1: Middleware<E1, R1>,
  m2: Middleware<E2, R2>,
  m3: Middleware<E3, R3>,
  m4: Middleware<E4, R4>,
  m5: Middleware<E5, R5>
): Middleware<E1 | E2 | E3 | E4 | E5, R1 | R2 | R3 | R4 | R5>
export function stack<E1, R1, E2, R2, E3, R3, E4, R4, E5, R5, E6, R6>(
  m1: Middleware<E1, R1>,
  m2: Middleware<E2, R2>,
  m3: Middleware<E3, R3>,
  m4: Middleware<E4, R4>,
  m5: Middleware<E5, R5>,
  m6: Middleware<E6, R6>
): Middleware<E1 | E2 | E3 | E4 | E5 | E6, R1 | R2 | R3 | R4 | R5 | R6>
export function stack<E1, R1, E2, R2, E3, R3, E4, R4, E5, R5, E6, R6, E7, R7>(
  m1: Middleware<E1, R1>,
  m2: Middleware<E2, R2>,
  m3: Middleware<E3, R3>,
  m4: Middleware<E4, R4>,
  m5: Middleware<E5, R5>,
  m6: Middleware<E6, R6>,
  m7: Middleware<E7, R7>
): Middleware<E1 | E2 | E3 | E4 | E5 | E6 | E7, R1 | R2 | R3 | R4 | R5 | R6 | R7>
export function stack(...layers: ReadonlyArray<Middleware<unknown, unknown>>): Middleware<unknown, unknown> {
  return <Req, Res, E, R>(service: Service<Req, Res, E, R>) =>
    layers.reduceRight<Service<Req, Res, unknown, unknown>>((inner, layer) => layer(inner), service)
}

/** Runs `observe` around every call (logging, metrics, spans) without changing what the call does. */
export const tap = <Req, Res, E>(observe: {
  readonly onRequest?: (request: Req) => Effect.Effect<void>
  readonly onSuccess?: (request: Req, response: Res) => Effect.Effect<void>
  readonly onFailure?: (request: Req, error: E) => Effect.Effect<void>
}) =>
<R>(service: Service<Req, Res, E, R>): Service<Req, Res, E, R> =>
(request) =>
  Effect.zipRight(
    observe.onRequest ? observe.onRequest(request) : Effect.void,
    service(request).pipe(
      Effect.tap((response) => (observe.onSuccess ? observe.onSuccess(request, response) : Effect.void)),
      Effect.tapError((error) => (observe.onFailure ? observe.onFailure(request, error) : Effect.void))
    )
  )

/** Refuses a request that fails `check` with `Invalid { reason }` before it reaches the service. */
export const filter = <Req>(check: (request: Req) => string | undefined) =>
<Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Invalid, R> =>
(request) => {
  const reason = check(request)
  return reason === undefined ? service(request) : Effect.fail(new Invalid({ reason }))
}

/** Answers with `recover` when the service fails with an error `handles` accepts; other errors pass on. */
export const fallback = <E, Res, EHandled extends E>(
  handles: (error: E) => error is EHandled,
  recover: (error: EHandled) => Effect.Effect<Res>
) =>
<Req, R>(service: Service<Req, Res, E, R>): Service<Req, Res, Exclude<E, EHandled>, R> =>
(request) =>
  Effect.catchIf(service(request), handles, recover) as Effect.Effect<Res, Exclude<E, EHandled>, R>
