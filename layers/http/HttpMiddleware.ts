/**
 * Keel middleware on an @effect/platform HTTP app.
 *
 * A Keel stack wraps services; an HTTP app is one (request in, response out), so `withMiddleware` runs
 * the app as a service under the stack and turns rejections into the answers HTTP clients understand.
 * Every rejection declares its own answer (`Rejection` in keel: `Timeout` 504, `RateLimited` 429,
 * `Overloaded`, `CircuitOpen`, `QueueFull`, `ShuttingDown` and the backends' `StoreFull`, `StoreUnavailable`,
 * `QueueUnavailable`, `Unavailable` 503, each with `Retry-After` when the wait is known, `Invalid` 400,
 * `TooLarge` 413), so this adapter keeps no list that a new error could fall through. Decode a request into
 * `Invalid` where it is read, as `Body.json` does: a Schema `ParseError` may as well come from the server's
 * own data, which is no client's fault. Every such answer is counted in `keel_http_rejections_total`
 * (tagged by status and error). Other errors pass through untouched to the app's own error handling.
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
import { contextOf, HttpAnswerKey, isRejection, type HttpAnswer, type Middleware, type Rejection } from "keel"

/**
 * The counter `keel_http_rejections_total`: requests `withMiddleware` answered with an error status, tagged
 * `status` (e.g. `503`) and `error` (the rejection's tag, e.g. `Overloaded`).
 */
export const rejections = Metric.counter("keel_http_rejections_total", {
  description: "requests answered with an error status by the Keel middleware adapter",
  incremental: true
})

/**
 * Whole seconds to wait, rounded up (at least 1), as `Retry-After` wants them; none when the rejection knows
 * no wait, or an infinite one (an isolated breaker).
 */
const retryAfterSeconds = (answer: HttpAnswer): Option.Option<string> => {
  const retryAfter = answer.retryAfter
  if (retryAfter === undefined || !Duration.isFinite(retryAfter)) return Option.none()
  return Option.some(String(Math.max(1, Math.ceil(Duration.toMillis(retryAfter) / 1000))))
}

/** The rejection's message, after the contexts `withContext` added, outermost first. */
const messageWithContext = (error: Rejection): string => {
  const contexts = contextOf(error)
  return contexts.length === 0 ? error.message : `${contexts.join(": ")}: ${error.message}`
}

/**
 * The HTTP answer for a rejection (see `Rejection` in keel), or none when the error is not one. The answer
 * is JSON, `{ "error": <tag>, "message": <the error's message> }`, with the status the rejection declares
 * and, when it knows the wait, a `Retry-After` header in whole seconds (rounded up). An error under
 * `withContext` is answered as the bare error, its message including the context. For apps that answer
 * errors themselves; `withMiddleware` uses it and counts the answer.
 */
export const rejectionResponse = (error: unknown): Option.Option<HttpServerResponse.HttpServerResponse> => {
  if (!isRejection(error)) return Option.none()
  const answer = error[HttpAnswerKey]
  const headers = Option.match(retryAfterSeconds(answer), {
    onNone: () => ({}),
    onSome: (seconds) => ({ "retry-after": seconds })
  })
  return Option.some(
    HttpServerResponse.unsafeJson({ error: error._tag, message: messageWithContext(error) }, {
      status: answer.status,
      headers
    })
  )
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
 *   const guard = withMiddleware(Middleware.stack(
 *     yield* Middleware.loadShed(),
 *     yield* Middleware.concurrencyLimit({ max: 100 }),
 *     yield* Middleware.timeout({ after: "5 seconds" })
 *   ))
 *   // Overloaded is answered with 503, Timeout with 504.
 *   return guard(Effect.succeed(HttpServerResponse.text("hello")))
 * })
 * ```
 */
export const withMiddleware = <EAdd, RAdd = never, EIn = unknown>(
  middleware: Middleware.Middleware<EAdd, RAdd, HttpServerRequest.HttpServerRequest, EIn>
) =>
<E extends EIn, R>(app: HttpApp.Default<E, R>): HttpApp.Default<Exclude<E | EAdd, Rejection>, Exclude<R | RAdd, never>> => {
  // The request is in the context already unless a middleware replaced it; providing it again would cost
  // a context switch per request. An app that is already its answer (a health check's constant) reads no
  // request, and is handed on as it is: a timeout sees a call that cannot run late.
  const service = middleware(
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
