/**
 * The request metrics of an HTTP service: how many, how they ended, how long they took, by route.
 *
 * `measured(route)` wraps the app that serves one route; labels are the route pattern (never the raw
 * path, whose ids would make the series unbounded), the method and the status, including the statuses of
 * errors the app leaves to the server (their response is worked out the way the server will).
 */
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpApp from "@effect/platform/HttpApp"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import { clockOf } from "#keel/internal/fiberClock"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import type * as Cause from "effect/Cause"

/**
 * The counter `keel_http_requests_total`: requests answered, tagged `route` (the name given to `measured`),
 * `method` and `status`, failures included with the status the server answers them with.
 */
export const requests = Metric.counter("keel_http_requests_total", {
  description: "HTTP requests answered, by route, method and status",
  incremental: true
})

/**
 * The histogram `keel_http_request_duration_seconds`: request latency in seconds, from the start of the
 * measured app to its response or failure, tagged `route`. Buckets from 1 ms to 10 s.
 */
export const duration = Metric.histogram(
  "keel_http_request_duration_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  "HTTP request latency in seconds, by route"
)

/**
 * Counts and times `app` as the route `route`, in `requests` and `duration`. Give the route pattern
 * (`/jobs/:id`), never the raw path, whose ids would make the series unbounded. The app itself is left
 * unchanged: its response and errors pass through. Call it once per route, not per request.
 *
 * @example
 * ```ts
 * import { HttpServerResponse } from "@effect/platform"
 * import { Effect } from "effect"
 * import { HttpMetrics } from "keel/http"
 *
 * const health = HttpMetrics.measured("/health")(Effect.succeed(HttpServerResponse.text("ok")))
 * ```
 */
export const measured = (route: string) => {
  // One label array per series, made once: the registry caches a series' hook by the array's identity,
  // where tagging the metric on every request would build a new key each time.
  const routeLabels = [MetricLabel.make("route", route)]
  const requestLabels = new Map<string, Map<number, Array<MetricLabel.MetricLabel>>>()
  const labelsOf = (method: string, status: number) => {
    let byStatus = requestLabels.get(method)
    if (byStatus === undefined) {
      byStatus = new Map()
      requestLabels.set(method, byStatus)
    }
    let labels = byStatus.get(status)
    if (labels === undefined) {
      labels = [...routeLabels, MetricLabel.make("method", method), MetricLabel.make("status", String(status))]
      byStatus.set(status, labels)
    }
    return labels
  }
  const record = (method: string, status: number, startedNanos: bigint, clock: Clock.Clock) => {
    requests.unsafeUpdate(1, labelsOf(method, status))
    duration.unsafeUpdate(Number(clock.unsafeCurrentTimeNanos() - startedNanos) / 1e9, routeLabels)
  }
  // The handlers are made per request by these factories rather than written inline as named properties:
  // a named function made per request costs a property definition for its name under a keep-names build.
  const recordSuccess = (method: string, startedNanos: bigint, clock: Clock.Clock) =>
  (response: HttpServerResponse.HttpServerResponse) => {
    record(method, response.status, startedNanos, clock)
    return Effect.succeed(response)
  }
  const recordFailure = (method: string, startedNanos: bigint, clock: Clock.Clock) =>
  <E>(cause: Cause.Cause<E>) =>
    // The status the server will answer this failure with.
    Effect.flatMap(HttpServerError.causeResponse(cause), ([response]) => {
      record(method, response.status, startedNanos, clock)
      return Effect.failCause(cause)
    })
  return <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<E, R> =>
    Effect.withFiberRuntime((fiber) => {
      const method = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest).method
      const clock = clockOf(fiber)
      const startedNanos = clock.unsafeCurrentTimeNanos()
      return Effect.matchCauseEffect(app, {
        onSuccess: recordSuccess(method, startedNanos, clock),
        onFailure: recordFailure(method, startedNanos, clock)
      })
    })
}
