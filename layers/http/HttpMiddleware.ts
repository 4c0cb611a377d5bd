/**
 * Keel middleware on an @effect/platform HTTP app.
 *
 * A Keel stack wraps services; an HTTP app is one (request in, response out), so `withMiddleware` runs
 * the app as a service under the stack and turns Keel's typed rejections into the answers HTTP clients
 * understand: `Timeout` → 504, `RateLimited` → 429, `Overloaded` / `CircuitOpen` / `QueueFull` /
 * `ShuttingDown` → 503, each with `Retry-After` when the wait is known, `Invalid` → 400 with the reason and
 * `TooLarge` → 413. Decode a request into `Invalid` where it is read, as `Body.json` does: a Schema
 * `ParseError` may as well come from the server's own data, which is no client's fault. Every such answer
 * is counted in `keel_http_rejections_total` (tagged by status and error). Other errors pass through
 * untouched to the app's own error handling. Errors are recognised by their `_tag`, so the adapter needs
 * no import of the middleware modules themselves.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import type * as Fiber from "effect/Fiber"
import type { Middleware } from "keel"

/**
 * The rejections `withMiddleware` answers, by tag: Keel's errors that mean "not now" or "not like this",
 * whichever module raised them. They leave the app's error type once it is wrapped.
 */
export type Rejection = {
  /**
   * The error's tag, with the status it is answered with: `Timeout` 504, `RateLimited` 429, `Overloaded`,
   * `CircuitOpen`, `QueueFull` and `ShuttingDown` 503, `Invalid` 400, `TooLarge` 413.
   */
  readonly _tag:
    | "Timeout"
    | "RateLimited"
    | "Overloaded"
    | "CircuitOpen"
    | "QueueFull"
    | "ShuttingDown"
    | "Invalid"
    | "TooLarge"
}

const statusByTag: Record<Rejection["_tag"], number> = {
  Timeout: 504,
  RateLimited: 429,
  Overloaded: 503,
  CircuitOpen: 503,
  QueueFull: 503,
  ShuttingDown: 503,
  Invalid: 400,
  TooLarge: 413
}

/**
 * The counter `keel_http_rejections_total`: requests `withMiddleware` answered with an error status, tagged
 * `status` (e.g. `503`) and `error` (the rejection's tag, e.g. `Overloaded`).
 */
export const rejections = Metric.counter("keel_http_rejections_total", {
  description: "requests answered with an error status by the Keel middleware adapter",
  incremental: true
})

const isRejection = (error: unknown): error is Rejection & Record<string, unknown> =>
  typeof error === "object" && error !== null && "_tag" in error &&
  Object.prototype.hasOwnProperty.call(statusByTag, String((error as { _tag: unknown })._tag))

/**
 * Whole seconds to wait, rounded up, as `Retry-After` wants them. A shed call (`Overloaded` without a
 * known wait) or a full queue is told to come back in a second; an isolated breaker (an infinite wait)
 * and a server shutting down (come back elsewhere) send no header.
 */
const retryAfterSeconds = (error: Rejection & Record<string, unknown>): Option.Option<string> => {
  const retryAfter = error["retryAfter"]
  if (!Duration.isDuration(retryAfter)) {
    return error._tag === "Overloaded" || error._tag === "QueueFull" ? Option.some("1") : Option.none()
  }
  if (!Duration.isFinite(retryAfter)) return Option.none()
  return Option.some(String(Math.max(1, Math.ceil(Duration.toMillis(retryAfter) / 1000))))
}

/**
 * The HTTP answer for a Keel rejection, or none when the error is not one (recognised by its `_tag`). The
 * answer is JSON, `{ "error": <tag>, "message": <the error's message> }`, with the rejection's status and,
 * when the wait is known, a `Retry-After` header in whole seconds (rounded up); an `Overloaded` or
 * `QueueFull` without a known wait gets `1`. For apps that answer errors themselves; `withMiddleware` uses
 * it and counts the answer.
 */
export const rejectionResponse = (error: unknown): Option.Option<HttpServerResponse.HttpServerResponse> => {
  if (!isRejection(error)) return Option.none()
  const status = statusByTag[error._tag]
  const message = error instanceof Error ? error.message : error._tag
  const headers = Option.match(retryAfterSeconds(error), {
    onNone: () => ({}),
    onSome: (seconds) => ({ "retry-after": seconds })
  })
  return Option.some(HttpServerResponse.unsafeJson({ error: error._tag, message }, { status, headers }))
}

const servedRequest = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
  Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)

const labelsByRejection = new Map<string, Array<MetricLabel.MetricLabel>>()
/** One label array per series (the registry caches series by the array's identity). */
const rejectionLabels = (status: number, error: string) => {
  const key = `${status} ${error}`
  let labels = labelsByRejection.get(key)
  if (labels === undefined) {
    labels = [MetricLabel.make("status", String(status)), MetricLabel.make("error", error)]
    labelsByRejection.set(key, labels)
  }
  return labels
}

/**
 * Runs `app` under `middleware` and answers Keel's rejections with their HTTP status. Request-typed
 * middleware (a keyed `rateLimit` reading the client from the request) fits as well as generic middleware.
 * The service the middleware wraps takes the `HttpServerRequest` and answers with the app's response.
 * Rejections (see `Rejection`) become responses as `rejectionResponse` makes them, counted in
 * `rejections`; every other error is left to the app's own error handling.
 *
 * @typeParam EAdd - The errors the middleware adds.
 * @typeParam RAdd - The requirements the middleware adds.
 *
 * @example
 * ```ts
 * import { HttpServerResponse } from "@effect/platform"
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 * import { withMiddleware } from "keel/http"
 *
 * const program = Effect.gen(function*() {
 *   const limit = yield* Middleware.concurrencyLimit(100)
 *   const guard = withMiddleware(Middleware.stack(Middleware.loadShed(), limit, Middleware.timeout("5 seconds")))
 *   // Overloaded is answered with 503, Timeout with 504.
 *   return guard(Effect.succeed(HttpServerResponse.text("hello")))
 * })
 * ```
 */
export const withMiddleware = <EAdd, RAdd = never>(
  middleware:
    | Middleware.Middleware<EAdd, RAdd>
    | Middleware.RequestMiddleware<HttpServerRequest.HttpServerRequest, EAdd>
) =>
<E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<Exclude<E | EAdd, Rejection>, Exclude<R | RAdd, never>> => {
  // The request is in the context already unless a middleware replaced it; providing it again would cost
  // a context switch per request. An app that is already its answer (a health check's constant) reads no
  // request, and is handed on as it is: a timeout sees a call that cannot run late.
  const service = (middleware as Middleware.Middleware<EAdd, RAdd>)(
    Exit.isExit(app) ? () => app : (request: HttpServerRequest.HttpServerRequest) =>
      Effect.withFiberRuntime<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest>((fiber) =>
        servedRequest(fiber) === request ? app : Effect.provideService(app, HttpServerRequest.HttpServerRequest, request)
      )
  )
  // Made once, not per request.
  const answerRejection = (error: E | EAdd) => {
    const response = rejectionResponse(error)
    if (Option.isNone(response)) return Effect.fail(error as Exclude<E | EAdd, Rejection>)
    rejections.unsafeUpdate(1, rejectionLabels(response.value.status, (error as Rejection)._tag))
    return Effect.succeed(response.value)
  }
  return Effect.withFiberRuntime<
    HttpServerResponse.HttpServerResponse,
    Exclude<E | EAdd, Rejection>,
    Exclude<R | RAdd, never> | HttpServerRequest.HttpServerRequest
  >((fiber) => Effect.catchAll(service(servedRequest(fiber)), answerRejection))
}
