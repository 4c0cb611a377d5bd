/**
 * The request metrics of an HTTP service: how many, how they ended, how long they took, by route.
 *
 * `measured(route)` wraps the app that serves one route; labels are the route pattern (never the raw
 * path, whose ids would make the series unbounded), the method and the status, including the statuses of
 * errors the app leaves to the server (their response is worked out the way the server will).
 */
import { HttpServerError, HttpServerRequest } from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { Effect, Metric, MetricBoundaries } from "effect"
import type { MetricLabel } from "effect"

export const requests = Metric.counter("keel_http_requests_total", {
  description: "HTTP requests answered, by route, method and status",
  incremental: true
})

export const duration = Metric.histogram(
  "keel_http_request_duration_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  "HTTP request latency in seconds, by route"
)

// Tagging a metric builds a new key each time: one per series, made once.
const requestSeries = new Map<string, Metric.Metric.Counter<number>>()
const durationSeries = new Map<string, Metric.Metric.Histogram<number>>()

const requestsFor = (route: string, method: string, status: number) => {
  const key = `${route} ${method} ${status}`
  let series = requestSeries.get(key)
  if (series === undefined) {
    series = requests.pipe(
      Metric.tagged("route", route),
      Metric.tagged("method", method),
      Metric.tagged("status", String(status))
    ) as Metric.Metric.Counter<number>
    requestSeries.set(key, series)
  }
  return series
}

const durationFor = (route: string) => {
  let series = durationSeries.get(route)
  if (series === undefined) {
    series = Metric.tagged(duration, "route", route)
    durationSeries.set(route, series)
  }
  return series
}

// Updates pass the same (empty) extra-tags array each time: the registry caches a series' hook by its identity.
const noExtraTags: Array<MetricLabel.MetricLabel> = []

const record = (route: string, method: string, status: number, startedNanos: bigint, now: bigint) => {
  requestsFor(route, method, status).unsafeUpdate(1, noExtraTags)
  durationFor(route).unsafeUpdate(Number(now - startedNanos) / 1e9, noExtraTags)
}

/** Counts and times `app` as the route `route`. */
export const measured = (route: string) => <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<E, R> =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    Effect.clockWith((clock) => {
      const startedNanos = clock.unsafeCurrentTimeNanos()
      return Effect.matchCauseEffect(app, {
        onSuccess: (response) => {
          record(route, request.method, response.status, startedNanos, clock.unsafeCurrentTimeNanos())
          return Effect.succeed(response)
        },
        onFailure: (cause) =>
          Effect.flatMap(HttpServerError.causeResponse(cause), ([response]) => {
            record(route, request.method, response.status, startedNanos, clock.unsafeCurrentTimeNanos())
            return Effect.failCause(cause)
          })
      })
    }))
