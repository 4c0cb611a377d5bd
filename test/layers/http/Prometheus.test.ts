/**
 * The exposition checked with a real Prometheus text-format parser: families, types, labels,
 * cumulative histogram buckets, quantiles, escaping, name sanitization and the `/metrics` response.
 */
import { HttpServerResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries, Option } from "effect"
import { createRequire } from "node:module"
import { contentType, exposition, metricsApp, render } from "../../../layers/http/Prometheus.js"

interface ParsedSample {
  readonly value?: string
  readonly labels?: Record<string, string>
  readonly buckets?: Record<string, string>
  readonly quantiles?: Record<string, string>
  readonly count?: string
  readonly sum?: string
}

interface ParsedFamily {
  readonly name: string
  readonly help: string
  readonly type: string
  readonly metrics: ReadonlyArray<ParsedSample>
}

const parse = createRequire(import.meta.url)("parse-prometheus-text-format") as (text: string) => Array<ParsedFamily>

const family = (text: string, name: string): ParsedFamily => {
  const found = parse(text).filter((candidate) => candidate.name === name)
  expect(found).toHaveLength(1)
  return found[0]!
}

describe("Prometheus exposition", () => {
  it.effect("renders tagged counters as one family with HELP and TYPE once", () =>
    Effect.gen(function*() {
      const requests = Metric.counter("prom_test_1_requests_total", { description: "Requests served" })
      yield* Metric.update(requests.pipe(Metric.tagged("method", "GET")), 1)
      yield* Metric.update(requests.pipe(Metric.tagged("method", "POST")), 3)
      const text = yield* exposition

      expect(text.match(/^# HELP prom_test_1_requests_total /gm)).toHaveLength(1)
      expect(text.match(/^# TYPE prom_test_1_requests_total counter$/gm)).toHaveLength(1)
      const parsed = family(text, "prom_test_1_requests_total")
      expect(parsed.type).toBe("COUNTER")
      expect(parsed.help).toBe("Requests served")
      expect(parsed.metrics).toEqual([
        { value: "1", labels: { method: "GET" } },
        { value: "3", labels: { method: "POST" } }
      ])
    }))

  it.effect("renders bigint counters as integers", () =>
    Effect.gen(function*() {
      const bytes = Metric.counter("prom_test_2_bytes", { bigint: true })
      yield* Metric.incrementBy(bytes, 12345678901234567890n)
      const parsed = family(yield* exposition, "prom_test_2_bytes")
      expect(parsed.metrics).toEqual([{ value: "12345678901234567890" }])
    }))

  it.effect("renders gauges", () =>
    Effect.gen(function*() {
      const inFlight = Metric.gauge("prom_test_3_in_flight")
      yield* Metric.set(inFlight, 2.5)
      const parsed = family(yield* exposition, "prom_test_3_in_flight")
      expect(parsed.type).toBe("GAUGE")
      expect(parsed.help).toBe("")
      expect(parsed.metrics).toEqual([{ value: "2.5" }])
    }))

  it.effect("renders histograms with cumulative buckets, +Inf equal to count, and sum", () =>
    Effect.gen(function*() {
      // boundaries 1, 2, 3 (and Effect's own +Infinity)
      const latency = Metric.histogram(
        "prom_test_4_latency_seconds",
        MetricBoundaries.linear({ start: 1, width: 1, count: 4 })
      )
      const observed = [0.5, 1, 1.5, 2.5, 2.5, 10]
      for (const value of observed) yield* Metric.update(latency, value)
      const text = yield* exposition

      expect(text.split("\n").filter((line) => line.startsWith("prom_test_4_latency_seconds_bucket{le=\"+Inf\"}")))
        .toHaveLength(1)
      const parsed = family(text, "prom_test_4_latency_seconds")
      expect(parsed.type).toBe("HISTOGRAM")
      const atOrBelow = (bound: number) => String(observed.filter((value) => value <= bound).length)
      expect(parsed.metrics).toEqual([{
        buckets: { "1": atOrBelow(1), "2": atOrBelow(2), "3": atOrBelow(3), "+Inf": String(observed.length) },
        sum: String(observed.reduce((a, b) => a + b, 0)),
        count: String(observed.length)
      }])
      expect(parsed.metrics[0]!.buckets).toEqual({ "1": "2", "2": "3", "3": "5", "+Inf": "6" })
    }))

  it.effect("formats fractional bucket bounds as Prometheus does", () =>
    Effect.gen(function*() {
      const sizes = Metric.histogram(
        "prom_test_5_seconds",
        MetricBoundaries.fromIterable([0.005, 0.25, 1])
      )
      yield* Metric.update(sizes, 0.1)
      const text = yield* exposition
      expect(text).toContain("prom_test_5_seconds_bucket{le=\"0.005\"} 0\n")
      expect(text).toContain("prom_test_5_seconds_bucket{le=\"0.25\"} 1\n")
      expect(text).toContain("prom_test_5_seconds_bucket{le=\"1\"} 1\n")
      expect(text).toContain("prom_test_5_seconds_bucket{le=\"+Inf\"} 1\n")
    }))

  // Effect stamps summary observations with the Clock but ages them against Date.now(), so live time.
  it.live("renders summaries with their quantiles, sum and count", () =>
    Effect.gen(function*() {
      const durations = Metric.summary({
        name: "prom_test_6_duration",
        maxAge: "1 hour",
        maxSize: 100,
        error: 0,
        quantiles: [0.5, 0.9]
      })
      for (const value of [1, 2, 3, 4, 5, 6, 7, 8, 9]) yield* Metric.update(durations, value)
      const state = yield* Metric.value(durations)
      const parsed = family(yield* exposition, "prom_test_6_duration")

      expect(parsed.type).toBe("SUMMARY")
      const expected = Object.fromEntries(
        state.quantiles.flatMap(([quantile, value]) => Option.isSome(value) ? [[String(quantile), String(value.value)]] : [])
      )
      expect(Object.keys(expected)).toEqual(["0.5", "0.9"])
      expect(parsed.metrics).toEqual([{ quantiles: expected, sum: "45", count: "9" }])
    }))

  it.effect("renders a frequency as a counter with the observed string in the label key", () =>
    Effect.gen(function*() {
      const outcomes = Metric.frequency("prom_test_7_outcomes", { description: "Outcome of each job" })
      yield* Metric.update(outcomes, "ok")
      yield* Metric.update(outcomes, "ok")
      yield* Metric.update(outcomes, "failed")
      const parsed = family(yield* exposition, "prom_test_7_outcomes")
      expect(parsed.type).toBe("COUNTER")
      expect(parsed.metrics).toEqual([
        { value: "1", labels: { key: "failed" } },
        { value: "2", labels: { key: "ok" } }
      ])
    }))

  it.effect("escapes label values and HELP so they round-trip through the parser", () =>
    Effect.gen(function*() {
      const nasty = "a \"quoted\" C:\\path\nsecond line"
      const counter = Metric.counter("prom_test_8_escaped", { description: "back\\slash and\nnewline" })
      yield* Metric.update(counter.pipe(Metric.tagged("path", nasty)), 1)
      const text = yield* exposition
      const parsed = family(text, "prom_test_8_escaped")
      expect(parsed.help).toBe("back\\slash and\nnewline")
      expect(parsed.metrics).toEqual([{ value: "1", labels: { path: nasty } }])
    }))

  it.effect("sanitizes metric and label names", () =>
    Effect.gen(function*() {
      const counter = Metric.counter("prom_test_9.http-requests")
      yield* Metric.update(counter.pipe(Metric.tagged("http.method", "GET"), Metric.tagged("9lives", "yes")), 1)
      const parsed = family(yield* exposition, "prom_test_9_http_requests")
      expect(parsed.metrics).toEqual([{ value: "1", labels: { _9lives: "yes", http_method: "GET" } }])
    }))

  it.effect("prefixes an underscore to a metric name that starts with a digit", () =>
    Effect.gen(function*() {
      yield* Metric.set(Metric.gauge("10_prom_test_10_gauge"), 1)
      const text = yield* exposition
      expect(text).toContain("# TYPE _10_prom_test_10_gauge gauge\n_10_prom_test_10_gauge 1\n")
    }))

  it.effect("formats NaN and infinities", () =>
    Effect.gen(function*() {
      yield* Metric.set(Metric.gauge("prom_test_11_nan"), NaN)
      yield* Metric.set(Metric.gauge("prom_test_11_pos"), Infinity)
      yield* Metric.set(Metric.gauge("prom_test_11_neg"), -Infinity)
      const text = yield* exposition
      expect(text).toContain("\nprom_test_11_nan NaN\n")
      expect(text).toContain("\nprom_test_11_pos +Inf\n")
      expect(text).toContain("\nprom_test_11_neg -Inf\n")
    }))

  it.effect("sorts families by name and series by labels", () =>
    Effect.gen(function*() {
      const zeta = Metric.counter("prom_test_12_zeta")
      const alpha = Metric.gauge("prom_test_12_alpha")
      yield* Metric.update(zeta.pipe(Metric.tagged("shard", "b")), 1)
      yield* Metric.update(zeta.pipe(Metric.tagged("shard", "a")), 1)
      yield* Metric.set(alpha, 1)
      const names = parse(yield* exposition).map((parsed) => parsed.name)
      expect(names.filter((name) => name.startsWith("prom_test_12_"))).toEqual(["prom_test_12_alpha", "prom_test_12_zeta"])
      expect(names).toEqual([...names].sort())
      const series = family(yield* exposition, "prom_test_12_zeta").metrics.map((sample) => sample.labels?.["shard"])
      expect(series).toEqual(["a", "b"])
    }))

  it.effect("render is pure over the pairs it is given, one HELP and TYPE per family", () =>
    Effect.gen(function*() {
      const jobs = Metric.counter("prom_test_14_jobs", { description: "Jobs run" })
      yield* Metric.update(jobs.pipe(Metric.tagged("queue", "slow")), 2)
      yield* Metric.update(jobs.pipe(Metric.tagged("queue", "fast")), 1)
      yield* Metric.set(Metric.gauge("prom_test_14_depth"), 7)
      const pairs = (yield* Metric.snapshot).filter((pair) => pair.metricKey.name.startsWith("prom_test_14_"))
      expect(render(pairs)).toBe(
        "# TYPE prom_test_14_depth gauge\n" +
          "prom_test_14_depth 7\n" +
          "# HELP prom_test_14_jobs Jobs run\n" +
          "# TYPE prom_test_14_jobs counter\n" +
          "prom_test_14_jobs{queue=\"fast\"} 1\n" +
          "prom_test_14_jobs{queue=\"slow\"} 2\n"
      )
      expect(render([])).toBe("")
    }))

  it.effect("the whole exposition parses and every family has a TYPE", () =>
    Effect.gen(function*() {
      const text = yield* exposition
      expect(text.endsWith("\n")).toBe(true)
      const families = parse(text)
      expect(families.length).toBeGreaterThan(0)
      for (const parsed of families) expect(parsed.type).not.toBe("UNTYPED")
      expect(new Set(families.map((parsed) => parsed.name)).size).toBe(families.length)
    }))

  it.effect("metricsApp answers 200 with the exposition and the Prometheus content type", () =>
    Effect.gen(function*() {
      yield* Metric.increment(Metric.counter("prom_test_13_served"))
      const response = yield* metricsApp
      expect(response.status).toBe(200)
      const web = HttpServerResponse.toWeb(response)
      expect(web.headers.get("content-type")).toBe(contentType)
      const body = yield* Effect.promise(() => web.text())
      expect(family(body, "prom_test_13_served").metrics).toEqual([{ value: "1" }])
    }))
})
