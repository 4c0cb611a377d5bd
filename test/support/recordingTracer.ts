/**
 * A tracer for tests that keeps every span it makes, so a test can read names, parents, links, attributes,
 * events and status. Its spans are Effect's native ones; installing it (`Effect.withTracer`) is what turns
 * Keel's tracing on, as an exporting tracer would.
 */
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"

/** A span as the native tracer keeps it: its attributes in a Map, its events as [name, time, attributes]. */
export type RecordedSpan = Tracer.Span & {
  readonly attributes: ReadonlyMap<string, unknown>
  readonly events: ReadonlyArray<readonly [string, bigint, Record<string, unknown>]>
}

/** A fresh tracer and the spans it made, in the order they started. */
export const recordingTracer = () => {
  const native = Effect.runSync(Effect.tracer)
  const spans: Array<RecordedSpan> = []
  const tracer = Tracer.make({
    span: (...args) => {
      const span = native.span(...args) as RecordedSpan
      spans.push(span)
      return span
    },
    context: (f, fiber) => native.context(f, fiber)
  })
  const named = (name: string) => spans.filter((span) => span.name === name)
  return { tracer, spans, named }
}
