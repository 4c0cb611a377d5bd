/**
 * keel/otel against a real collector's view: the real OTLP/HTTP exporter posting to a receiver on 127.0.0.1
 * (a port the OS picks). Spans arrive with their service, parents and attributes by the time the layer has
 * closed, those of the shutdown included; the environment turns tracing on, off and decides the sampling,
 * and a setting that cannot be used is a ConfigError naming its variable.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer, Option, Tracer } from "effect"
import type { ConfigError } from "effect"
import { Otel } from "keel/otel"
import * as OtlpReceiver from "../../support/otlpReceiver.js"

/** `effect` run with `env` as the whole environment `Config` reads. */
const withEnv = (env: Record<string, string>) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.withConfigProvider(effect, ConfigProvider.fromMap(new Map(Object.entries(env))))

const orderFlow = Effect.gen(function*() {
  const inner = yield* Effect.currentSpan
  yield* Effect.annotateCurrentSpan("order.id", "o-17")
  return inner
}).pipe(
  Effect.withSpan("inner", { attributes: { "order.items": 3, "order.express": true } }),
  Effect.withSpan("outer", { kind: "server", attributes: { "http.route": "/orders" } })
)

/** The ConfigError `config` fails with under `env`. */
const configErrorUnder = (env: Record<string, string>) =>
  Otel.config().pipe(withEnv(env), Effect.flip)

/** The path of each InvalidData in `error` (an `And` / `Or` of several included). */
const invalidPaths = (error: ConfigError.ConfigError): Array<string> => {
  switch (error._op) {
    case "InvalidData":
    case "MissingData":
    case "SourceUnavailable":
    case "Unsupported":
      return [error.path.join(".")]
    case "And":
    case "Or":
      return [...invalidPaths(error.left), ...invalidPaths(error.right)]
  }
}

describe("Otel.layer", () => {
  it.scopedLive("exports nested spans with the service, the parent link and the attributes once the layer closes", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      const inner = yield* orderFlow.pipe(
        Effect.provide(Otel.layer({
          serviceName: "orders",
          tracesEndpoint: receiver.tracesEndpoint,
          resourceAttributes: { "deployment.environment.name": "test" }
        }))
      )
      // No waiting: the batch processor exports every 5 seconds, so the spans are here only if closing the
      // layer flushed them.
      const spans = yield* receiver.spans
      expect(spans.map((span) => span.name).sort()).toEqual(["inner", "outer"])
      const outer = spans.find((span) => span.name === "outer")!
      const child = spans.find((span) => span.name === "inner")!
      expect(spans.map((span) => span.service)).toEqual(["orders", "orders"])
      expect(child.traceId).toBe(outer.traceId)
      expect(child.parentSpanId).toBe(outer.spanId)
      expect(outer.parentSpanId).toBeUndefined()
      expect({ traceId: child.traceId, spanId: child.spanId }).toEqual({ traceId: inner.traceId, spanId: inner.spanId })
      expect(outer.kind).toBe("server")
      expect(child.kind).toBe("internal")
      expect(outer.attributes).toEqual({ "http.route": "/orders" })
      expect(child.attributes).toEqual({ "order.items": 3, "order.express": true, "order.id": "o-17" })
      expect(child.status.code).toBe(1)
      expect(child.startNs >= outer.startNs && child.endNs <= outer.endNs).toBe(true)
      const requests = yield* receiver.requests
      expect(requests.every((request) => request.contentType?.startsWith("application/json"))).toBe(true)
    }))

  it.scopedLive("spans ended while the program shuts down reach the collector before the provider stops", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      // A resource whose release is traced, as a pool draining or a server closing would be.
      const connectionPool = Layer.scopedDiscard(
        Effect.addFinalizer(() => Effect.sleep("20 millis").pipe(Effect.withSpan("close-connection-pool")))
      )
      const program = Effect.gen(function*() {
        yield* Effect.addFinalizer(() => Effect.withSpan(Effect.void, "flush-outbox"))
        yield* Effect.withSpan(Effect.void, "serve")
      }).pipe(Effect.scoped)
      yield* program.pipe(
        Effect.provide(connectionPool),
        Effect.provide(Otel.layer({ serviceName: "orders", tracesEndpoint: receiver.tracesEndpoint }))
      )
      const names = (yield* receiver.spans).map((span) => span.name).sort()
      expect(names).toEqual(["close-connection-pool", "flush-outbox", "serve"])
    }))

  it.scopedLive("a failed span is exported with the error status and the failure as an exception event", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      yield* Effect.fail(new Error("card declined")).pipe(
        Effect.withSpan("charge"),
        Effect.exit,
        Effect.provide(Otel.layer({ serviceName: "payments", tracesEndpoint: receiver.tracesEndpoint }))
      )
      const [charge] = yield* receiver.spans
      expect(charge?.status).toEqual({ code: 2, message: "card declined" })
      expect(charge?.events.map((event) => [event.name, event.attributes["exception.message"]])).toEqual([
        ["exception", "card declined"]
      ])
    }))

  it.scopedLive("a parent from another process is kept, and its decision not to sample is honoured", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      // What @effect/platform's HttpTraceContext makes of `traceparent: 00-<trace>-<span>-01` / `-00`.
      const sampledCaller = Tracer.externalSpan({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: true })
      const unsampledCaller = Tracer.externalSpan({ traceId: "1af7651916cd43dd8448eb211c80319c", spanId: "c7ad6b7169203331", sampled: false })
      const handle = (name: string) => Effect.withSpan(Effect.withSpan(Effect.void, `${name}-query`), name)
      yield* Effect.all([
        handle("sampled-request").pipe(Effect.withParentSpan(sampledCaller)),
        handle("unsampled-request").pipe(Effect.withParentSpan(unsampledCaller))
      ]).pipe(
        Effect.provide(Otel.layer({ serviceName: "orders", tracesEndpoint: receiver.tracesEndpoint, sampler: "parentbased_always_on" }))
      )
      const spans = yield* receiver.spans
      expect(spans.map((span) => span.name).sort()).toEqual(["sampled-request", "sampled-request-query"])
      const request = spans.find((span) => span.name === "sampled-request")!
      expect(request.traceId).toBe(sampledCaller.traceId)
      expect(request.parentSpanId).toBe(sampledCaller.spanId)
    }))

  it("dies naming the option when the endpoint is not an http(s) URL", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.provide(Effect.void, Otel.layer({ serviceName: "orders", tracesEndpoint: "collector:4318" })))
      expect(Exit.isFailure(exit) && String(exit.cause)).toMatch(/tracesEndpoint is not an http\(s\) URL: "collector:4318"/)
    }))
})

describe("Otel.fromEnv", () => {
  it.scopedLive("with no endpoint set it is Layer.empty: Effect's own tracer stays", () =>
    Effect.gen(function*() {
      const native = yield* Effect.tracer
      const inside = yield* Effect.tracer.pipe(Effect.provide(Otel.fromEnv()), withEnv({ OTEL_SERVICE_NAME: "orders" }))
      expect(inside).toBe(native)
      const span = yield* Effect.currentSpan.pipe(Effect.withSpan("local"), Effect.provide(Otel.fromEnv()), withEnv({}))
      expect(span.constructor).toBe((yield* Effect.currentSpan.pipe(Effect.withSpan("reference"))).constructor)
    }))

  it.scopedLive("OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on; OTEL_SDK_DISABLED=true turns it off again", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      const native = yield* Effect.tracer
      const env = { OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.endpoint}/`, OTEL_SERVICE_NAME: "orders" }
      const disabledTracer = yield* Effect.tracer.pipe(Effect.provide(Otel.fromEnv()), withEnv({ ...env, OTEL_SDK_DISABLED: "true" }))
      expect(disabledTracer).toBe(native)
      const tracer = yield* Effect.tracer.pipe(Effect.withSpan("checkout"), Effect.provide(Otel.fromEnv()), withEnv(env))
      expect(tracer).not.toBe(native)
      expect((yield* receiver.spans).map((span) => [span.service, span.name])).toEqual([["orders", "checkout"]])
    }))

  it.scopedLive("with OTEL_TRACES_SAMPLER=always_off nothing is sent, where always_on sends the spans", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      const runWithSampler = (sampler: string) =>
        orderFlow.pipe(
          Effect.provide(Otel.fromEnv({ serviceName: "orders" })),
          withEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.tracesEndpoint, OTEL_TRACES_SAMPLER: sampler })
        )
      yield* runWithSampler("always_off")
      expect(yield* receiver.requests).toEqual([])
      yield* runWithSampler("always_on")
      expect((yield* receiver.spans).map((span) => span.name).sort()).toEqual(["inner", "outer"])
    }))

  it.scopedLive("traceidratio keeps about the given share of traces, each whole", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      const traces = 400
      yield* Effect.forEach(
        Array.from({ length: traces }, (_, index) => index),
        (index) => Effect.withSpan(Effect.withSpan(Effect.void, "step"), `job-${index}`),
        { discard: true }
      ).pipe(
        Effect.provide(Otel.fromEnv({ serviceName: "jobs" })),
        withEnv({
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
          OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
          OTEL_TRACES_SAMPLER_ARG: "0.25"
        })
      )
      const spans = yield* receiver.spans
      const roots = spans.filter((span) => span.parentSpanId === undefined)
      // Binomial(400, 0.25): 100 expected, outside 50..150 with a probability below 1e-9.
      expect(roots.length).toBeGreaterThan(50)
      expect(roots.length).toBeLessThan(150)
      // A parent-based sampler keeps a trace's children with it.
      expect(spans.filter((span) => span.name === "step").map((span) => span.traceId).sort())
        .toEqual(roots.map((span) => span.traceId).sort())
    }), 30_000)

  it("fails with the ConfigError of a setting that cannot be used", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.provide(Effect.void, Otel.fromEnv()).pipe(
        withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_TRACES_SAMPLER: "sometimes" })
      ))
      expect(Exit.isFailure(exit) && String(exit.cause)).toMatch(/Invalid data at OTEL_TRACES_SAMPLER: "expected one of always_on, /)
    }))
})

describe("Otel.config", () => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }

  it.effect("nothing when no endpoint is set, whatever else is", () =>
    Effect.gen(function*() {
      expect(yield* Otel.config().pipe(withEnv({ OTEL_SERVICE_NAME: "orders", OTEL_TRACES_SAMPLER: "always_on" })))
        .toEqual(Option.none())
      expect(yield* Otel.config().pipe(withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "  " }))).toEqual(Option.none())
    }))

  it.effect("the defaults: parent-based always-on sampling, ratio 1, an unknown service", () =>
    Effect.gen(function*() {
      expect(yield* Otel.config().pipe(withEnv(endpoint))).toEqual(Option.some({
        serviceName: "unknown_service:node",
        tracesEndpoint: "http://collector:4318/v1/traces",
        sampler: "parentbased_always_on",
        samplingRatio: 1,
        resourceAttributes: {}
      }))
    }))

  it.effect("the traces endpoint is used as it is and wins over the base endpoint", () =>
    Effect.gen(function*() {
      const options = yield* Otel.config().pipe(withEnv({
        ...endpoint,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://traces.example.com/otlp/spans"
      }))
      expect(Option.map(options, (options) => options.tracesEndpoint)).toEqual(Option.some("https://traces.example.com/otlp/spans"))
      const trailingSlash = yield* Otel.config().pipe(withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/base/" }))
      expect(Option.map(trailingSlash, (options) => options.tracesEndpoint)).toEqual(Option.some("http://collector:4318/base/v1/traces"))
    }))

  it.effect.each([
    [{ OTEL_TRACES_SAMPLER: "always_on" }, "always_on", 1],
    [{ OTEL_TRACES_SAMPLER: "always_off" }, "always_off", 1],
    [{ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" }, "traceidratio", 0.25],
    [{ OTEL_TRACES_SAMPLER: "traceidratio" }, "traceidratio", 1],
    [{ OTEL_TRACES_SAMPLER: "parentbased_always_on" }, "parentbased_always_on", 1],
    [{ OTEL_TRACES_SAMPLER: "parentbased_always_off" }, "parentbased_always_off", 1],
    [{ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" }, "parentbased_traceidratio", 0],
    [{ OTEL_TRACES_SAMPLER: " ParentBased_TraceIdRatio ", OTEL_TRACES_SAMPLER_ARG: "1e-2" }, "parentbased_traceidratio", 0.01]
  ] as const)("sampler %j", ([env, sampler, samplingRatio]) =>
    Effect.gen(function*() {
      const options = yield* Otel.config().pipe(withEnv({ ...endpoint, ...env }))
      expect(Option.map(options, ({ sampler, samplingRatio }) => ({ sampler, samplingRatio })))
        .toEqual(Option.some({ sampler, samplingRatio }))
    }))

  it.effect("the service is named by OTEL_SERVICE_NAME, then the resource attributes, then the default given", () =>
    Effect.gen(function*() {
      const serviceUnder = (env: Record<string, string>) =>
        Otel.config({ serviceName: "from-code" }).pipe(
          withEnv({ ...endpoint, ...env }),
          Effect.map(Option.map((options) => options.serviceName))
        )
      const attributes = "service.name=from-attributes"
      expect(yield* serviceUnder({ OTEL_SERVICE_NAME: "from-name", OTEL_RESOURCE_ATTRIBUTES: attributes })).toEqual(Option.some("from-name"))
      expect(yield* serviceUnder({ OTEL_RESOURCE_ATTRIBUTES: attributes })).toEqual(Option.some("from-attributes"))
      expect(yield* serviceUnder({})).toEqual(Option.some("from-code"))
    }))

  it.effect("resource attributes are key=value pairs with percent-encoded values", () =>
    Effect.gen(function*() {
      const options = yield* Otel.config().pipe(withEnv({
        ...endpoint,
        OTEL_RESOURCE_ATTRIBUTES: " deployment.environment.name = production ,team=pay%2Cments,, note=a%3Db "
      }))
      expect(Option.map(options, (options) => options.resourceAttributes)).toEqual(Option.some({
        "deployment.environment.name": "production",
        team: "pay,ments",
        note: "a=b"
      }))
    }))

  it.effect.each([
    [{ OTEL_TRACES_SAMPLER: "sometimes" }, "OTEL_TRACES_SAMPLER", /expected one of always_on, always_off, traceidratio, /],
    [{ OTEL_TRACES_SAMPLER: "jaeger_remote" }, "OTEL_TRACES_SAMPLER", /got "jaeger_remote"/],
    [{ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1.5" }, "OTEL_TRACES_SAMPLER_ARG", /from 0 to 1, got "1.5"/],
    [{ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "half" }, "OTEL_TRACES_SAMPLER_ARG", /got "half"/],
    [{ OTEL_TRACES_SAMPLER_ARG: "-0.1" }, "OTEL_TRACES_SAMPLER_ARG", /from 0 to 1/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }, "OTEL_EXPORTER_OTLP_ENDPOINT", /expected an http\(s\) URL/],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "ftp://collector/traces" }, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", /expected an http\(s\) URL/],
    [{ OTEL_RESOURCE_ATTRIBUTES: "team" }, "OTEL_RESOURCE_ATTRIBUTES", /expected key=value pairs/],
    [{ OTEL_RESOURCE_ATTRIBUTES: "team=%E0%A4%A" }, "OTEL_RESOURCE_ATTRIBUTES", /not percent-encoded/],
    [{ OTEL_SDK_DISABLED: "maybe" }, "OTEL_SDK_DISABLED", /expected true or false/]
  ] as const)("%j is a ConfigError naming the variable", ([env, variable, message]) =>
    Effect.gen(function*() {
      const error = yield* configErrorUnder({ ...endpoint, ...env })
      expect(invalidPaths(error)).toEqual([variable])
      expect(String(error)).toContain(`Invalid data at ${variable}:`)
      expect(String(error)).toMatch(message)
    }))
})
