/**
 * Middleware — Tower's Service and Layer, in Effect.
 *
 * A service is a function from a request to an Effect of a response (Tower's `Service::call`; readiness is
 * the Effect itself suspending). A middleware maps a service to a service (Tower's `Layer`) and may add
 * errors of its own (`Timeout`, `RateLimited`, …) and requirements. `stack(a, b, c)` composes in the order
 * written, outermost first, as `ServiceBuilder::new().layer(a).layer(b).layer(c)` does: a request passes
 * through `a`, then `b`, then `c`, then the service.
 *
 * Every middleware has one shape: a constructor taking an options object and returning
 * `Effect<Middleware, never, Scope>` — stateless ones too, so that adding state to one later (a metric, a
 * window) changes nothing for its users — with its error type defined with Keel's other errors and its
 * metric series beside it. A middleware that reads the request (a keyed rate limit) or inspects the
 * service's errors (a breaker's `isFailure`) says so in its type, and `stack` combines those constraints,
 * so every middleware composes in `stack` the same way.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Invalid } from "../Errors.js"

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

/** The key of a middleware's type-level description; no middleware has it at run time. */
declare const MiddlewareTypes: unique symbol

/**
 * Wraps a service in a service of the same shape that may also fail with `EAdd` and need `RAdd`. Most
 * middleware wrap any service; one that reads the request (a keyed `rateLimit`) accepts only services whose
 * request is a `ReqIn`, and one that inspects the service's errors (a `circuitBreaker` or `retry` with a
 * typed predicate) only services whose errors are `EIn`. Build one with a constructor of this module and
 * compose several with `stack`; any function `(service) => service` of this shape is one too.
 *
 * @typeParam EAdd - The errors the middleware adds (e.g. `Timeout`); `never` when it adds none.
 * @typeParam RAdd - The requirements the middleware adds; `never` when it adds none.
 * @typeParam ReqIn - The requests it can handle; `unknown` (the default) when it does not read them.
 * @typeParam EIn - The service errors it can handle; `unknown` (the default) when it does not inspect them.
 */
export interface Middleware<EAdd = never, RAdd = never, ReqIn = unknown, EIn = unknown> {
  <Req extends ReqIn, Res, E extends EIn, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | EAdd, R | RAdd>
  /** What the middleware adds and accepts, for `stack`'s types; never present at run time. */
  readonly [MiddlewareTypes]?: {
    /** The errors it adds. */
    readonly adds: (_: never) => EAdd
    /** The requirements it adds. */
    readonly requires: (_: never) => RAdd
    /** The requests it accepts. */
    readonly accepts: (_: ReqIn) => void
    /** The service errors it accepts. */
    readonly handles: (_: EIn) => void
  }
}

/** Any middleware, whatever it adds and accepts: what `stack` takes. */
export type AnyMiddleware = Middleware<any, any, any, any>

/** The errors the middleware `M` adds (for a union of middleware, what any of them adds). */
export type Adds<M> = M extends Middleware<infer E, any, any, any> ? E : never

/** The requirements the middleware `M` adds (for a union of middleware, what any of them adds). */
export type Requires<M> = M extends Middleware<any, infer R, any, any> ? R : never

/** The requests the middleware `M` accepts (for a union of middleware, what all of them accept). */
export type Accepts<M> = (M extends Middleware<any, any, infer Req, any> ? (_: Req) => void : never) extends
  (_: infer All) => void ? All : never

/** The service errors the middleware `M` accepts (for a union of middleware, what all of them accept). */
export type Handles<M> = (M extends Middleware<any, any, any, infer E> ? (_: E) => void : never) extends
  (_: infer All) => void ? All : never

/**
 * The middleware `stack(...layers)` makes: it adds the errors and requirements of every layer, and accepts
 * the requests and service errors that every layer accepts.
 *
 * @typeParam Layers - The middleware stacked, outermost first.
 */
export type Stacked<Layers extends ReadonlyArray<AnyMiddleware>> = Middleware<
  Adds<Layers[number]>,
  Requires<Layers[number]>,
  Accepts<Layers[number]>,
  Handles<Layers[number]>
>

/**
 * Composes middleware outermost first (Tower's `ServiceBuilder` order): `stack(a, b)(service)` is
 * `a(b(service))`, so a request passes through `a`, then `b`, then reaches the service. Any number of
 * layers; the result adds the errors and requirements of all of them and accepts what all of them accept
 * (a keyed rate limit in the stack makes the whole stack need its request type). A `stack` is itself a
 * middleware, so stacks nest. Order matters: a `timeout` above a `retry` bounds the whole sequence, below
 * it each attempt.
 *
 * @typeParam Layers - The middleware stacked, outermost first.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const lookup = (id: number) => Effect.succeed({ id, name: `user ${id}` })
 *
 * const program = Effect.gen(function*() {
 *   const guarded = Middleware.stack(
 *     yield* Middleware.timeout({ after: "2 seconds" }),
 *     yield* Middleware.loadShed(),
 *     yield* Middleware.concurrencyLimit({ max: 10 })
 *   )(lookup) // fails with Timeout | Overloaded besides lookup's own errors
 *   return yield* guarded(1)
 * }).pipe(Effect.scoped)
 * ```
 */
export const stack = <const Layers extends ReadonlyArray<AnyMiddleware>>(...layers: Layers): Stacked<Layers> =>
  (<Req, Res, E, R>(service: Service<Req, Res, E, R>) =>
    layers.reduceRight<Service<Req, Res, unknown, unknown>>((inner, layer) => layer(inner), service)) as Stacked<Layers>

/** What `tap` runs around every call; each hook is optional and cannot fail. */
export interface TapOptions<Req = unknown, E = unknown> {
  /** Runs before the service is called, with the request. */
  readonly onRequest?: (request: Req) => Effect.Effect<void>
  /** Runs after the service succeeded, with the request and the response. */
  readonly onSuccess?: (request: Req, response: unknown) => Effect.Effect<void>
  /** Runs after the service failed with a typed error (not on a defect or an interruption). */
  readonly onFailure?: (request: Req, error: E) => Effect.Effect<void>
}

/**
 * Runs hooks around every call (logging, metrics, spans) without changing what the call does: the hooks
 * cannot fail, and the service's response or error passes on unchanged.
 *
 * @typeParam Req - The requests the hooks read; the services it wraps must take them.
 * @typeParam E - The errors `onFailure` reads; the services it wraps must fail only with them.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const lookup = (id: number) => Effect.succeed(`user ${id}`)
 *
 * const program = Effect.gen(function*() {
 *   const logged = (yield* Middleware.tap({
 *     onRequest: (id: number) => Effect.log(`lookup ${id}`),
 *     onSuccess: (id: number, name) => Effect.log(`lookup ${id}: ${String(name)}`)
 *   }))(lookup)
 *   return yield* logged(7)
 * }).pipe(Effect.scoped)
 * ```
 */
export const tap = <Req = unknown, E = unknown>(
  options: TapOptions<Req, E>
): Effect.Effect<Middleware<never, never, Req, E>, never, Scope.Scope> =>
  Effect.succeed(<Rq extends Req, Res, Er extends E, R>(service: Service<Rq, Res, Er, R>): Service<Rq, Res, Er, R> =>
  (request) =>
    Effect.zipRight(
      options.onRequest ? options.onRequest(request) : Effect.void,
      service(request).pipe(
        Effect.tap((response) => (options.onSuccess ? options.onSuccess(request, response) : Effect.void)),
        Effect.tapError((error) => (options.onFailure ? options.onFailure(request, error) : Effect.void))
      )
    )
  )

/** What `filter` checks. */
export interface FilterOptions<Req> {
  /**
   * Returns `undefined` to let the request through, or a reason (a message a client can act on) to refuse
   * it with `Invalid { reason }`.
   */
  readonly check: (request: Req) => string | undefined
}

/**
 * Checks each request before it reaches the service: a request `check` refuses fails with
 * `Invalid { reason }` (answered 400 over HTTP) and the service is not called.
 *
 * @typeParam Req - The request `check` inspects; the services it wraps must take it.
 */
export const filter = <Req>(
  options: FilterOptions<Req>
): Effect.Effect<Middleware<Invalid, never, Req>, never, Scope.Scope> =>
  Effect.succeed(<Rq extends Req, Res, E, R>(service: Service<Rq, Res, E, R>): Service<Rq, Res, E | Invalid, R> =>
  (request) => {
    const reason = options.check(request)
    return reason === undefined ? service(request) : Effect.fail(new Invalid({ reason }))
  })
