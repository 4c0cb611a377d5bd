/**
 * Keel with OpenTelemetry: `import { Otel } from "keel/otel"`. Effect's spans exported over OTLP/HTTP,
 * configured by OpenTelemetry's standard environment variables. Building a tracing layer needs the optional
 * peer dependencies `@effect/opentelemetry`, `@opentelemetry/sdk-trace-base`, `@opentelemetry/sdk-trace-node`
 * and `@opentelemetry/exporter-trace-otlp-http`; importing this entry point and leaving tracing off does not.
 */
export * as Otel from "./Otel.js"
