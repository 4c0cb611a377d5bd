/**
 * The shutdown as a trace: a root span `shutdown` from the signal to the end of the drain, a child per phase
 * (`shutdown preStop`, `shutdown inFlight`, `shutdown finalizers`) and one per component that reported its
 * drain (`drain http`, `drain jobs`, …), so a slow drain shows in a trace viewer as a long bar and who held it.
 *
 * The spans are made from the shutdown report once the drain is over, with the times the report measured:
 * nothing is traced while the drain runs (its deadline is what matters then), and a run without an exporting
 * tracer does nothing at all. The tracer must outlive the drain to export them (keel/node's `runMain` takes
 * one for the whole run).
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { activeTracer } from "./tracing.js"

/** What the trace is made from: the report's figures, and when each component reported, in Clock millis. */
export interface ShutdownTiming {
  readonly trigger: string
  readonly outcome: "clean" | "forced" | "escalated"
  readonly totalMs: number
  readonly drainTimeoutMs: number
  readonly preStopDelayMs: number
  readonly phases: ReadonlyArray<{ readonly phase: string; readonly durationMs: number }>
  readonly components: ReadonlyArray<{
    readonly component: string
    readonly durationMs: number
    readonly finished: number
    readonly forced: number
    readonly unfinished: ReadonlyArray<string>
    /** When it reported (the end of its drain). */
    readonly reportedAt: number
  }>
}

const nanos = (millis: number) => BigInt(Math.round(millis)) * 1_000_000n

/** Exports `timing` as a trace ending at `endedAt` (Clock millis), when tracing is on; nothing otherwise. */
export const traceShutdown = (timing: ShutdownTiming, endedAt: number): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const tracer = activeTracer(fiber)
    if (tracer === undefined) return Effect.void
    const context = fiber.currentContext
    const span = (
      name: string,
      parent: Option.Option<Tracer.AnySpan>,
      startMillis: number,
      attributes: Record<string, unknown>
    ) => {
      const made = tracer.span(name, parent, context, [], nanos(startMillis), "internal")
      for (const [key, value] of Object.entries(attributes)) made.attribute(key, value)
      return made
    }
    const startedAt = endedAt - timing.totalMs
    const root = span("shutdown", Option.none(), startedAt, {
      "keel.shutdown.trigger": timing.trigger,
      "keel.shutdown.outcome": timing.outcome,
      "keel.shutdown.drain_timeout_ms": timing.drainTimeoutMs,
      "keel.shutdown.pre_stop_delay_ms": timing.preStopDelayMs
    })
    let phaseStart = startedAt
    for (const { durationMs, phase } of timing.phases) {
      span(`shutdown ${phase}`, Option.some(root), phaseStart, {}).end(nanos(phaseStart + durationMs), Exit.void)
      phaseStart += durationMs
    }
    for (const component of timing.components) {
      const drained = span(`drain ${component.component}`, Option.some(root), component.reportedAt - component.durationMs, {
        "keel.drain.finished": component.finished,
        "keel.drain.forced": component.forced,
        "keel.drain.unfinished": component.unfinished.length
      })
      drained.end(nanos(component.reportedAt), component.forced > 0 ? Exit.fail(`${component.forced} forced`) : Exit.void)
    }
    root.end(nanos(endedAt), timing.outcome === "clean" ? Exit.void : Exit.fail(`shutdown ${timing.outcome}`))
    return Effect.void
  })
