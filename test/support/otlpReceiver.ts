/**
 * An OTLP/HTTP trace receiver for tests: what a collector would see of the spans a program exports.
 *
 * Tests of tracing must not stop at "the exporter was called": the spans have to leave the process as the
 * real `@opentelemetry/exporter-trace-otlp-http` sends them and arrive whole, with their parents, resource and
 * attributes. This is a `node:http` server on 127.0.0.1, on a port the OS picks, that accepts
 * `POST /v1/traces` in OTLP's JSON encoding (the exporter's default; gzip-compressed too, as
 * `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` makes it), flattens `resourceSpans → scopeSpans → spans` into one list
 * of plain records and answers 200 `{}`. Bodies past a bound are refused with 413, other encodings with 415.
 * The server lives as long as the Scope that started it; waiting for spans polls with a deadline.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Zlib from "node:zlib"

/** The kinds of OTLP's `Span.SpanKind`, by their number on the wire, named as Effect names them. */
const spanKinds = ["unspecified", "internal", "server", "client", "producer", "consumer"] as const

/** A span as it arrived, with the name of the service whose resource it came under. */
export interface ReceivedSpan {
  /** The resource's `service.name`. */
  readonly service: string | undefined
  readonly traceId: string
  readonly spanId: string
  /** Absent on a root span. */
  readonly parentSpanId: string | undefined
  readonly name: string
  readonly kind: (typeof spanKinds)[number]
  readonly startNs: bigint
  readonly endNs: bigint
  readonly attributes: Readonly<Record<string, unknown>>
  readonly links: ReadonlyArray<{ readonly traceId: string; readonly spanId: string; readonly attributes: Readonly<Record<string, unknown>> }>
  /** OTLP's status code: 0 unset, 1 ok, 2 error. */
  readonly status: { readonly code: number; readonly message: string | undefined }
  readonly events: ReadonlyArray<{ readonly name: string; readonly timeNs: bigint; readonly attributes: Readonly<Record<string, unknown>> }>
}

/** One request the receiver answered. */
export interface ReceivedRequest {
  readonly method: string
  readonly path: string
  readonly contentType: string | undefined
  readonly status: number
}

export interface OtlpReceiver {
  /** The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it: `http://127.0.0.1:<port>`. */
  readonly endpoint: string
  /** Where traces are posted, as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` takes it: `<endpoint>/v1/traces`. */
  readonly tracesEndpoint: string
  /** Every span received so far, in order of arrival. */
  readonly spans: Effect.Effect<ReadonlyArray<ReceivedSpan>>
  /** Every request answered so far. */
  readonly requests: Effect.Effect<ReadonlyArray<ReceivedRequest>>
  /**
   * The spans received so far once `arrived` holds of them, polled every 20 ms; dies after `timeout`
   * (2 seconds by default) naming what had arrived.
   */
  readonly waitFor: (
    arrived: (spans: ReadonlyArray<ReceivedSpan>) => boolean,
    timeout?: Duration.DurationInput
  ) => Effect.Effect<ReadonlyArray<ReceivedSpan>>
}

/** An OTLP `AnyValue` in JSON form as a plain value; int64 numbers sent as strings become numbers. */
const fromAnyValue = (value: Record<string, unknown> | undefined): unknown => {
  if (value === undefined) return undefined
  if ("stringValue" in value) return value["stringValue"]
  if ("boolValue" in value) return value["boolValue"]
  if ("intValue" in value) return Number(value["intValue"])
  if ("doubleValue" in value) return Number(value["doubleValue"])
  if ("bytesValue" in value) return value["bytesValue"]
  if ("arrayValue" in value) {
    const { values = [] } = value["arrayValue"] as { values?: Array<Record<string, unknown>> }
    return values.map(fromAnyValue)
  }
  if ("kvlistValue" in value) return fromKeyValues((value["kvlistValue"] as { values?: Array<KeyValue> }).values)
  return undefined
}

interface KeyValue {
  readonly key: string
  readonly value?: Record<string, unknown>
}

const fromKeyValues = (pairs: ReadonlyArray<KeyValue> | undefined): Record<string, unknown> =>
  Object.fromEntries((pairs ?? []).map(({ key, value }) => [key, fromAnyValue(value)]))

// The shape of an ExportTraceServiceRequest in OTLP's JSON encoding, as far as the receiver reads it.
interface JsonSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind?: number
  readonly startTimeUnixNano: string | number
  readonly endTimeUnixNano: string | number
  readonly attributes?: ReadonlyArray<KeyValue>
  readonly links?: ReadonlyArray<{ traceId: string; spanId: string; attributes?: ReadonlyArray<KeyValue> }>
  readonly status?: { code?: number; message?: string }
  readonly events?: ReadonlyArray<{ name: string; timeUnixNano: string | number; attributes?: ReadonlyArray<KeyValue> }>
}

interface ExportTraceServiceRequest {
  readonly resourceSpans?: ReadonlyArray<{
    readonly resource?: { readonly attributes?: ReadonlyArray<KeyValue> }
    readonly scopeSpans?: ReadonlyArray<{ readonly spans?: ReadonlyArray<JsonSpan> }>
  }>
}

const flatten = (request: ExportTraceServiceRequest): Array<ReceivedSpan> =>
  (request.resourceSpans ?? []).flatMap(({ resource, scopeSpans }) => {
    const service = fromKeyValues(resource?.attributes)["service.name"]
    return (scopeSpans ?? []).flatMap(({ spans }) =>
      (spans ?? []).map((span): ReceivedSpan => ({
        service: typeof service === "string" ? service : undefined,
        traceId: span.traceId,
        spanId: span.spanId,
        parentSpanId: span.parentSpanId === undefined || span.parentSpanId === "" ? undefined : span.parentSpanId,
        name: span.name,
        kind: spanKinds[span.kind ?? 0] ?? "unspecified",
        startNs: BigInt(span.startTimeUnixNano),
        endNs: BigInt(span.endTimeUnixNano),
        attributes: fromKeyValues(span.attributes),
        links: (span.links ?? []).map((link) => ({
          traceId: link.traceId,
          spanId: link.spanId,
          attributes: fromKeyValues(link.attributes)
        })),
        status: { code: span.status?.code ?? 0, message: span.status?.message || undefined },
        events: (span.events ?? []).map((event) => ({
          name: event.name,
          timeNs: BigInt(event.timeUnixNano),
          attributes: fromKeyValues(event.attributes)
        }))
      }))
    )
  })

/** Reads a request's body up to `limit` bytes; undefined past it (the rest is drained, not kept). */
const readBody = (request: Http.IncomingMessage, limit: number): Promise<Buffer | undefined> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let size = 0
    request.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size <= limit) chunks.push(chunk)
    })
    request.on("end", () => resolve(size <= limit ? Buffer.concat(chunks) : undefined))
    request.on("error", reject)
  })

/**
 * Starts a receiver on 127.0.0.1 (a port the OS picks) for the rest of the Scope, which closes it. A body
 * (compressed or not) larger than `maxBodyBytes` (default 4 MiB) is refused with 413.
 */
export const start = (options: { readonly maxBodyBytes?: number } = {}): Effect.Effect<OtlpReceiver, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024
    const spans: Array<ReceivedSpan> = []
    const requests: Array<ReceivedRequest> = []

    const answer = async (request: Http.IncomingMessage, response: Http.ServerResponse) => {
      const contentType = request.headers["content-type"]
      const reply = (status: number, body: string) => {
        requests.push({ method: request.method ?? "", path: request.url ?? "", contentType, status })
        response.writeHead(status, { "content-type": "application/json" }).end(body)
      }
      if (request.method !== "POST" || request.url !== "/v1/traces") return reply(404, `{"error":"not found"}`)
      const body = await readBody(request, maxBodyBytes)
      if (body === undefined) return reply(413, `{"error":"body over ${maxBodyBytes} bytes"}`)
      if (!contentType?.startsWith("application/json")) return reply(415, `{"error":"only OTLP JSON is understood"}`)
      let json: Buffer
      try {
        json = request.headers["content-encoding"] === "gzip" ? Zlib.gunzipSync(body, { maxOutputLength: maxBodyBytes }) : body
        spans.push(...flatten(JSON.parse(json.toString("utf8")) as ExportTraceServiceRequest))
      } catch (error) {
        return reply(400, JSON.stringify({ error: String(error) }))
      }
      reply(200, "{}")
    }

    const server = Http.createServer((request, response) => void answer(request, response))
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
      () =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const received = Effect.sync((): ReadonlyArray<ReceivedSpan> => spans.slice())

    const waitFor = (arrived: (spans: ReadonlyArray<ReceivedSpan>) => boolean, timeout: Duration.DurationInput = "2 seconds") =>
      received.pipe(
        Effect.filterOrFail(arrived),
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout(timeout),
        Effect.catchAll(() =>
          Effect.dieMessage(
            `the awaited spans did not arrive within ${Duration.format(timeout)}; received: ${
              spans.map((span) => `${span.service}/${span.name}`).join(", ") || "none"
            }`
          )
        )
      )

    return {
      endpoint,
      tracesEndpoint: `${endpoint}/v1/traces`,
      spans: received,
      requests: Effect.sync((): ReadonlyArray<ReceivedRequest> => requests.slice()),
      waitFor
    }
  })
