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
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { Invalid } from "../Errors.js"

/**
 * The counter `keel_middleware_rejections_total`: calls a middleware refused, for every middleware, tagged
 * `middleware=<name>` (the name given in the middleware's options) and `reason` (e.g. `queue-full`, `open`).
 * Read one middleware's series through its own helper (`rateLimitMetrics`, `concurrencyLimitMetrics`,
 * `circuitBreakerMetrics`).
 */
export const middlewareRejections = Metric.counter("keel_middleware_rejections_total", {
  description: "calls a middleware refused",
  incremental: true
})

/**
 * The gauge `keel_middleware_waiting`: calls waiting at a limit now (queued for a concurrency limit's
 * permit, sleeping until a rate limit's slot), tagged `middleware=<name>`.
 */
export const middlewareWaiting = Metric.gauge("keel_middleware_waiting", { description: "calls queued at a limit" })

/**
 * A request in, an Effect of a response out: what every middleware wraps. Any function of that shape is a
 * service (a client call, a handler, a method of a service object); nothing needs to be registered.
 *
 * @typeParam Req - The request the service takes.
 * @typeParam Res - The response it succeeds with.
 * @typeParam E - The typed errors it can fail with.
 * @typeParam R - The requirements (context) its Effect needs.
 */
export type Service<Req, Res, E = never, R = never> = (request: Req) => Effect.Effect<Res, E, R>

/**
 * Wraps any service, whatever its request and response types, in a service of the same shape that may
 * also fail with `EAdd` and need `RAdd`. Build one with `timeout`, `deadline`, `loadShed`, `tap`, …, or
 * from the Effect of a stateful one (`rateLimit`, `concurrencyLimit`, `retry`, `hedge`, a circuit breaker's
 * `middleware`), and compose several with `stack`.
 *
 * @typeParam EAdd - The errors the middleware adds (e.g. `Timeout`); `never` when it adds none.
 * @typeParam RAdd - The requirements the middleware adds; `never` when it adds none.
 */
export type Middleware<EAdd = never, RAdd = never> = <Req, Res, E, R>(
  service: Service<Req, Res, E, R>
) => Service<Req, Res, E | EAdd, R | RAdd>

/**
 * Composes middleware outermost first (Tower's `ServiceBuilder` order): `stack(a, b)(service)` is
 * `a(b(service))`, so a request passes through `a`, then `b`, then reaches the service. The result is a
 * `Middleware` adding the errors and requirements of all of them (`E1 | E2 | …`, `R1 | R2 | …`, where
 * `En` and `Rn` are what the n-th middleware adds). Up to seven at once; a `stack` is itself a middleware,
 * so stacks nest for more. Order matters: a `timeout` above a `retry` bounds the whole sequence, below it
 * each attempt.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const lookup = (id: number) => Effect.succeed({ id, name: `user ${id}` })
 *
 * const program = Effect.gen(function*() {
 *   const limit = yield* Middleware.concurrencyLimit(10)
 *   // Timeout | Overloaded is added to lookup's errors
 *   const guarded = Middleware.stack(Middleware.timeout("2 seconds"), Middleware.loadShed(), limit)(lookup)
 *   return yield* guarded(1)
 * }).pipe(Effect.scoped)
 * ```
 */
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

/**
 * Runs `observe` around every call (logging, metrics, spans) without changing what the call does: the
 * hooks cannot fail, and the service's response or error passes on unchanged. Each hook is optional.
 *
 * @typeParam Req - The request of the services it wraps.
 * @typeParam Res - Their response.
 * @typeParam E - Their typed errors, as `onFailure` receives them.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const lookup = (id: number) => Effect.succeed(`user ${id}`)
 *
 * const logged = Middleware.tap<number, string, never>({
 *   onRequest: (id) => Effect.log(`lookup ${id}`),
 *   onSuccess: (id, name) => Effect.log(`lookup ${id}: ${name}`)
 * })(lookup)
 * ```
 */
export const tap = <Req, Res, E>(observe: {
  /** Runs before the service is called, with the request. */
  readonly onRequest?: (request: Req) => Effect.Effect<void>
  /** Runs after the service succeeded, with the request and the response. */
  readonly onSuccess?: (request: Req, response: Res) => Effect.Effect<void>
  /** Runs after the service failed with a typed error (not on a defect or an interruption). */
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

/**
 * Checks each request before it reaches the service. `check` returns `undefined` to let the request
 * through, or a reason (a message a client can act on) to refuse it: the call then fails with
 * `Invalid { reason }` and the service is not called.
 *
 * @typeParam Req - The request `check` inspects.
 */
export const filter = <Req>(check: (request: Req) => string | undefined) =>
<Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Invalid, R> =>
(request) => {
  const reason = check(request)
  return reason === undefined ? service(request) : Effect.fail(new Invalid({ reason }))
}

/**
 * Answers with `recover` when the service fails with an error `handles` accepts (a type guard), so that
 * error leaves the wrapped service's error type; other errors, defects and interruptions pass on.
 *
 * @typeParam E - The errors of the services it wraps.
 * @typeParam Res - Their response, which `recover` answers with.
 * @typeParam EHandled - The errors `handles` picks out and `recover` turns into a response.
 */
export const fallback = <E, Res, EHandled extends E>(
  handles: (error: E) => error is EHandled,
  recover: (error: EHandled) => Effect.Effect<Res>
) =>
<Req, R>(service: Service<Req, Res, E, R>): Service<Req, Res, Exclude<E, EHandled>, R> =>
(request) =>
  Effect.catchIf(service(request), handles, recover) as Effect.Effect<Res, Exclude<E, EHandled>, R>
