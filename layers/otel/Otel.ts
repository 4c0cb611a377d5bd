/**
 * Tracing to an OpenTelemetry collector: Effect's spans (`Effect.withSpan`, and those of the libraries a
 * program uses) leave the process over OTLP/HTTP, batched, with the service's resource attributes.
 *
 * Tracing is configured where operators expect it, in OpenTelemetry's standard environment variables, read
 * through Effect's `Config` so a wrong value stops the start with a `ConfigError` naming the variable instead
 * of being skipped in silence. It is opt-in and costs nothing when off: `fromEnv` is `Layer.empty` unless an
 * endpoint is set, so an application can always include it, and the OpenTelemetry SDK is loaded only when a
 * tracing layer is built (it is an optional peer dependency). While the layer lives, Effect's Tracer is
 * `@effect/opentelemetry`'s; when its Scope closes, the spans still buffered, those of the shutdown included,
 * are flushed and the provider shut down.
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

/**
 * OpenTelemetry's sampler names, as `OTEL_TRACES_SAMPLER` takes them. `always_on` records every trace,
 * `always_off` none, `traceidratio` the share `samplingRatio` of them (decided from the trace id, so every
 * service decides alike); the `parentbased_` forms follow the caller's decision when the trace came in with
 * one (a `traceparent` header) and apply the named sampler to the traces that start here.
 */
export type SamplerName =
  | "always_on"
  | "always_off"
  | "traceidratio"
  | "parentbased_always_on"
  | "parentbased_always_off"
  | "parentbased_traceidratio"

const samplerNames: ReadonlyArray<SamplerName> = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
]

/** Options of `layer`: where spans go, which of them, and the resource they are reported under. */
export interface Options {
  /** The resource's `service.name`: how the tracing backend names this service. */
  readonly serviceName: string
  /** The URL spans are posted to, in full, e.g. `http://otel-collector:4318/v1/traces`. */
  readonly tracesEndpoint: string
  /** Which traces are recorded; `parentbased_always_on` (all, unless the caller decided otherwise) by default. */
  readonly sampler?: SamplerName
  /** For `traceidratio` and `parentbased_traceidratio`: the share of traces recorded, from 0 to 1; default 1. */
  readonly samplingRatio?: number
  /** More attributes of the resource, e.g. `{ "deployment.environment.name": "production" }`. */
  readonly resourceAttributes?: Readonly<Record<string, string>>
  /** HTTP headers sent with every export, e.g. an API key; added to `OTEL_EXPORTER_OTLP_HEADERS`. */
  readonly headers?: Readonly<Record<string, string>>
  /** How long closing the layer waits for the last spans to be exported; default 3 seconds. */
  readonly shutdownTimeout?: Duration.DurationInput
}

/** What `config` and `fromEnv` fall back on where the environment says nothing. */
export interface EnvDefaults {
  /** The service's name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` gives one. */
  readonly serviceName?: string
}

/**
 * Tracing with explicit `options`, whatever the environment says of endpoint, sampler and resource (the
 * exporter still reads `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT` and `_COMPRESSION`, and the batch processor
 * `OTEL_BSP_*`). Spans are posted as OTLP/HTTP JSON in batches; closing the layer flushes them. Provide it
 * outermost, so that every span the program and its other layers make, while running and while shutting
 * down, is traced. Dies when `tracesEndpoint` is not an http(s) URL, or when the OpenTelemetry packages are
 * not installed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Otel } from "keel/otel"
 *
 * const handleOrder = Effect.log("order placed").pipe(
 *   Effect.withSpan("handle-order", { attributes: { "order.items": 3 } })
 * )
 *
 * const traced = handleOrder.pipe(
 *   Effect.provide(Otel.layer({
 *     serviceName: "orders",
 *     tracesEndpoint: "http://otel-collector:4318/v1/traces",
 *     sampler: "parentbased_traceidratio",
 *     samplingRatio: 0.1
 *   }))
 * )
 * ```
 */
export const layer = (options: Options): Layer.Layer<never> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    if (!isHttpUrl(options.tracesEndpoint)) {
      return yield* Effect.dieMessage(`Otel.layer: tracesEndpoint is not an http(s) URL: ${JSON.stringify(options.tracesEndpoint)}`)
    }
    const tracing = yield* Effect.promise(() => import("./internal/tracing.js"))
    return tracing.layer(options)
  }))

const isHttpUrl = (text: string) => {
  try {
    const { protocol } = new URL(text)
    return protocol === "http:" || protocol === "https:"
  } catch {
    return false
  }
}

/**
 * A variable read by `parse` (given the value without surrounding blanks), or none when it is unset or blank,
 * as OpenTelemetry reads an empty value. A value `parse` refuses (with a message) is a ConfigError at the
 * variable.
 */
const setting = <A>(name: string, parse: (value: string) => Either.Either<A, string>): Config.Config<Option.Option<A>> =>
  Config.string(name).pipe(
    Config.mapOrFail((raw) =>
      raw.trim() === ""
        ? Either.right(Option.none())
        : Either.mapBoth(parse(raw.trim()), { onLeft: (message) => ConfigError.InvalidData([], message), onRight: Option.some })
    ),
    Config.option,
    Config.map(Option.flatten)
  )

const httpUrl = (url: string) => isHttpUrl(url) ? Either.right(url) : Either.left(`expected an http(s) URL, got ${JSON.stringify(url)}`)

const samplerName = (raw: string) => {
  const name = raw.toLowerCase() as SamplerName
  return samplerNames.includes(name)
    ? Either.right(name)
    : Either.left(`expected one of ${samplerNames.join(", ")}, got ${JSON.stringify(raw)}`)
}

const ratio = (raw: string) => {
  const share = Number(raw)
  return share >= 0 && share <= 1 ? Either.right(share) : Either.left(`expected a sampling ratio from 0 to 1, got ${JSON.stringify(raw)}`)
}

/** `key=value` pairs separated by commas, values percent-encoded (a comma in a value is written `%2C`). */
const keyValuePairs = (raw: string) => {
  const attributes: Record<string, string> = {}
  for (const pair of raw.split(",")) {
    if (pair.trim() === "") continue
    const equals = pair.indexOf("=")
    const key = pair.slice(0, equals).trim()
    if (equals < 0 || key === "") return Either.left(`expected key=value pairs separated by commas, got ${JSON.stringify(pair)}`)
    try {
      attributes[key] = decodeURIComponent(pair.slice(equals + 1).trim())
    } catch {
      return Either.left(`the value of ${key} is not percent-encoded: ${JSON.stringify(pair)}`)
    }
  }
  return Either.right(attributes)
}

const trueOrFalse = (raw: string) => {
  const value = raw.toLowerCase()
  return value === "true" || value === "false" ? Either.right(value === "true") : Either.left(`expected true or false, got ${JSON.stringify(raw)}`)
}

/** Joins a base URL and OTLP's path for traces, as `OTEL_EXPORTER_OTLP_ENDPOINT` is specified. */
const tracesPathOf = (base: string) => `${base.replace(/\/+$/, "")}/v1/traces`

/**
 * The `Options` OpenTelemetry's standard environment gives, or none when tracing is off — no endpoint set,
 * or `OTEL_SDK_DISABLED=true`:
 * - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full URL spans are posted to; it wins over
 *   `OTEL_EXPORTER_OTLP_ENDPOINT`, a base URL to which `/v1/traces` is appended.
 * - `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `defaults.serviceName`,
 *   else `unknown_service:node`.
 * - `OTEL_RESOURCE_ATTRIBUTES`: more resource attributes, `key=value,key2=value2` (values percent-encoded).
 * - `OTEL_TRACES_SAMPLER`: a `SamplerName` (default `parentbased_always_on`), and `OTEL_TRACES_SAMPLER_ARG`
 *   the ratio of the `traceidratio` samplers (default 1).
 *
 * An empty variable counts as unset. A value that cannot be used fails with a `ConfigError` naming its
 * variable, e.g. `(Invalid data at OTEL_TRACES_SAMPLER: "expected one of always_on, …, got \"sometimes\"")`.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Otel } from "keel/otel"
 *
 * const describeTracing = Effect.map(Otel.config({ serviceName: "orders" }), Option.match({
 *   onNone: () => "tracing off",
 *   onSome: (options) => `tracing ${options.serviceName} to ${options.tracesEndpoint}`
 * }))
 * ```
 */
export const config = (defaults: EnvDefaults = {}): Config.Config<Option.Option<Options>> =>
  Config.all({
    disabled: setting("OTEL_SDK_DISABLED", trueOrFalse),
    tracesEndpoint: setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", httpUrl),
    endpoint: setting("OTEL_EXPORTER_OTLP_ENDPOINT", httpUrl),
    serviceName: setting("OTEL_SERVICE_NAME", Either.right),
    resourceAttributes: setting("OTEL_RESOURCE_ATTRIBUTES", keyValuePairs),
    sampler: setting("OTEL_TRACES_SAMPLER", samplerName),
    samplingRatio: setting("OTEL_TRACES_SAMPLER_ARG", ratio)
  }).pipe(Config.map((env): Option.Option<Options> => {
    const tracesEndpoint = Option.orElse(env.tracesEndpoint, () => Option.map(env.endpoint, tracesPathOf))
    if (Option.getOrElse(env.disabled, () => false) || Option.isNone(tracesEndpoint)) return Option.none()
    const resourceAttributes = Option.getOrElse(env.resourceAttributes, (): Record<string, string> => ({}))
    return Option.some({
      serviceName: Option.getOrElse(
        env.serviceName,
        () => resourceAttributes["service.name"] ?? defaults.serviceName ?? "unknown_service:node"
      ),
      tracesEndpoint: tracesEndpoint.value,
      sampler: Option.getOrElse(env.sampler, (): SamplerName => "parentbased_always_on"),
      samplingRatio: Option.getOrElse(env.samplingRatio, () => 1),
      resourceAttributes
    })
  }))

/**
 * Tracing as OpenTelemetry's standard environment configures it (see `config`), or `Layer.empty` when no
 * endpoint is set: include it unconditionally, outermost, and tracing is turned on by setting
 * `OTEL_EXPORTER_OTLP_ENDPOINT`. Fails with a `ConfigError` naming the variable when a setting cannot be used.
 * `defaults.serviceName` names the service when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES`
 * does.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "keel"
 * import { runMain } from "keel/node"
 * import { Otel } from "keel/otel"
 *
 * // OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 OTEL_TRACES_SAMPLER=parentbased_traceidratio \
 * // OTEL_TRACES_SAMPLER_ARG=0.25 node main.js
 * const program = Effect.gen(function*() {
 *   yield* Effect.log("started").pipe(Effect.withSpan("start-up"))
 *   yield* Lifecycle.awaitDraining
 * })
 *
 * runMain(program.pipe(Effect.provide(Otel.fromEnv({ serviceName: "orders" }))))
 * ```
 */
export const fromEnv = (defaults: EnvDefaults = {}): Layer.Layer<never, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config(defaults), Option.match({ onNone: () => Layer.empty, onSome: layer })))
