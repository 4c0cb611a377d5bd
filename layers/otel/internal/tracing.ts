/**
 * The OpenTelemetry SDK behind `Otel.layer`: a NodeTracerProvider whose BatchSpanProcessor posts spans to
 * an OTLP/HTTP endpoint, installed as Effect's Tracer through `@effect/opentelemetry`.
 *
 * This module is loaded only when a tracing layer is built, so an application that leaves tracing off never
 * loads the SDK (about a third of a second of start-up) and need not install it. The provider, processor and
 * exporter are made anew for each build of the layer (a processor that has been shut down stays down), and
 * the layer's release flushes the spans still buffered — those of the shutdown itself included — and shuts
 * the provider down, within `shutdownTimeout`.
 *
 * One correction to `@effect/opentelemetry`: it marks a parent that came from another process (an
 * `ExternalSpan`, as `HttpTraceContext` decodes a `traceparent` header) as sampled unless the parent's context
 * carries the OpenTelemetry trace flags, so a `parentbased_*` sampler would record the children of a request
 * the caller chose not to sample. The tracer installed here gives such a parent the flags its `sampled` says.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as Resource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler
} from "@opentelemetry/sdk-trace-base"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import type { Options, SamplerName } from "../Otel.js"

const samplerOf = (name: SamplerName, ratio: number): Sampler => {
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler()
    case "always_off":
      return new AlwaysOffSampler()
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio)
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() })
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) })
  }
}

/** W3C trace flags: bit 0 is `sampled`. */
const traceFlagsOf = (sampled: boolean) => (sampled ? 1 : 0)

/** An external parent that does not say otherwise carries the trace flags of its `sampled`. */
const withTraceFlags = (parent: Tracer.AnySpan): Tracer.AnySpan =>
  parent._tag === "ExternalSpan" && !parent.sampled && Option.isNone(Context.getOption(parent.context, OtelTracer.OtelTraceFlags))
    ? { ...parent, context: Context.add(parent.context, OtelTracer.OtelTraceFlags, traceFlagsOf(parent.sampled)) }
    : parent

/** `@effect/opentelemetry`'s tracer, with external parents' sampling decisions kept. */
const honouringRemoteSampling = Layer.unwrapEffect(
  Effect.map(OtelTracer.make, (tracer) =>
    Layer.setTracer(Tracer.make({
      span: (name, parent, context, links, startTime, kind, options) =>
        tracer.span(name, Option.map(parent, withTraceFlags), context, links, startTime, kind, options),
      context: (execution, fiber) => tracer.context(execution, fiber)
    })))
)

/** Tracing to `options.tracesEndpoint` as Effect's Tracer for as long as the layer lives. */
export const layer = (options: Options): Layer.Layer<never> =>
  Layer.unwrapEffect(Effect.sync(() => {
    const exporter = new OTLPTraceExporter({ url: options.tracesEndpoint, headers: { ...options.headers } })
    const provider = NodeSdk.layerTracerProvider(new BatchSpanProcessor(exporter), {
      sampler: samplerOf(options.sampler ?? "parentbased_always_on", options.samplingRatio ?? 1),
      shutdownTimeout: options.shutdownTimeout ?? "3 seconds"
    })
    const resource = Resource.layer({ serviceName: options.serviceName, attributes: { ...options.resourceAttributes } })
    return honouringRemoteSampling.pipe(
      Layer.provide(OtelTracer.layerTracer),
      Layer.provide(provider),
      Layer.provide(resource)
    )
  }))
