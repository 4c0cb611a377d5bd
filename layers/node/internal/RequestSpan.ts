/**
 * RequestSpan — a request's server span, named and annotated as OpenTelemetry's HTTP conventions ask.
 *
 * A trace viewer finds a request by its span: `POST /jobs` (method and route pattern; the method alone when
 * no route is known), kind server, with the stable `http.*`, `url.*`, `server.*`, `client.*` and
 * `user_agent.original` attributes and the response's `http.response.status_code`. A caller that sent a W3C
 * `traceparent` has its trace continued: the span's parent is the caller's span. A 5xx answer marks the span
 * with `error.type`, as the conventions ask of a server. Only used when tracing is on (DrainingHttpServer).
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as HttpTraceContext from "@effect/platform/HttpTraceContext"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/** `app`, each run in a server span for its request. */
export const traced = <E, R>(
  app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>,
  server: { readonly host: string; readonly port: number },
  routeOf: ((request: HttpServerRequest.HttpServerRequest) => string | undefined) | undefined
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
    const route = routeOf?.(request)
    const query = request.url.indexOf("?")
    const caller = HttpTraceContext.fromHeaders(request.headers)
    const userAgent = request.headers["user-agent"]
    const client = Option.getOrUndefined(request.remoteAddress)
    const answered = Effect.tap(app, (response) =>
      Effect.annotateCurrentSpan(
        response.status >= 500
          ? { "http.response.status_code": response.status, "error.type": String(response.status) }
          : { "http.response.status_code": response.status }
      ))
    return Effect.withSpan(answered, route === undefined ? request.method : `${request.method} ${route}`, {
      kind: "server",
      ...(Option.isSome(caller) ? { parent: caller.value } : {}),
      attributes: {
        "http.request.method": request.method,
        "url.path": query < 0 ? request.url : request.url.slice(0, query),
        ...(query < 0 ? {} : { "url.query": request.url.slice(query + 1) }),
        "url.scheme": "http",
        "server.address": server.host,
        "server.port": server.port,
        ...(route === undefined ? {} : { "http.route": route }),
        ...(client === undefined ? {} : { "client.address": client }),
        ...(userAgent === undefined ? {} : { "user_agent.original": userAgent })
      }
    })
  })
