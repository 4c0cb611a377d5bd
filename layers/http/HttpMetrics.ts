/**
 * The request metrics of an HTTP service: how many, how they ended, how long they took, by route.
 *
 * `measured(route)` wraps the app that serves one route; labels are the route pattern (never the raw
 * path, whose ids would make the series unbounded), the method and the status, including the statuses of
 * errors the app leaves to the server (their response is worked out the way the server will).
 */
import { HttpServerError, HttpServerRequest } from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { Effect, Metric, MetricBoundaries, MetricLabel } from "effect"

export const requests = Metric.counter("keel_http_requests_total", {
  description: "HTTP requests answered, by route, method and status",
  incremental: true
})

export const duration = Metric.histogram(
  "keel_http_request_duration_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  "HTTP request latency in seconds, by route"
)

// One label array per series, made once: the registry caches a series' hook by the array's identity,
// where tagging the metric on every request would build a new key each time.
const labelSets = new Map<string, Array<MetricLabel.MetricLabel>>()

const labels = (...pairs: ReadonlyArray<readonly [string, string]>): Array<MetricLabel.MetricLabel> => {
  const key = pairs.map(([name, value]) => `${name}=${value}`).join(",")
  let set = labelSets.get(key)
  if (set === undefined) {
    set = pairs.map(([name, value]) => MetricLabel.make(name, value))
    labelSets.set(key, set)
  }
  return set
}

const record = (route: string, method: string, status: number, startedNanos: bigint, now: bigint) => {
  requests.unsafeUpdate(1, labels(["route", route], ["method", method], ["status", String(status)]))
  duration.unsafeUpdate(Number(now - startedNanos) / 1e9, labels(["route", route]))
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
