/**
 * Propagation — what a job carries from where it was offered to where it runs.
 *
 * A job outlives the request that offered it and may run in another process, yet two things of that request
 * still matter where it runs: which trace it belongs to (so a trace viewer shows the request and the job's
 * run together), and by when whoever offered it stops waiting (a job whose deadline has passed is not worth
 * starting). `capture` reads both from the offering fiber — its current span, when tracing is on, and the
 * deadline the `deadline` middleware or an explicit option set — into a small plain record that a backend
 * stores beside the payload (as JSON text, `encode` / `decode`, in a distributed one). The runner reads it back:
 * the job's span continues the offering span's trace and links to it, and the run is bounded by what is left
 * of the deadline. A job offered outside any span and deadline carries nothing, and costs nothing.
 *
 * The deadline is an instant of the offering process's Clock (Unix millis on the live Clock): across
 * machines it is as good as their clocks agree.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { currentDeadline } from "./internal/deadline.js"
import { clockOf } from "./internal/fiberClock.js"
import { currentParent } from "./internal/tracing.js"

/** The span a job was offered in, as W3C trace context names its parts. */
export interface TraceParent {
  /** 32 lowercase hex digits. */
  readonly traceId: string
  /** 16 lowercase hex digits. */
  readonly spanId: string
  /** Whether the offering span was sampled. */
  readonly sampled: boolean
}

/** What a job carries from where it was offered to where it runs; each part only when there was one. */
export interface Carried {
  /** The span the job was offered in, when tracing was on there. */
  readonly trace?: TraceParent
  /** The instant (Clock millis) by which the job must have ended: the sooner of the offerer's deadline and an explicit one. */
  readonly deadline?: number
}

/**
 * The context of the offer `fiber` is making now: its current span (when tracing is on) and the sooner of
 * its deadline and `deadlineAfter` from now. Undefined when there is neither, so a job offered outside any
 * span or deadline carries nothing.
 */
export const captureFrom = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  deadlineAfter?: Duration.DurationInput
): Carried | undefined => {
  const span = currentParent(fiber)
  const inherited = fiber.getFiberRef(currentDeadline)
  let deadline = Option.getOrUndefined(inherited)
  if (deadlineAfter !== undefined) {
    const now = clockOf(fiber).unsafeCurrentTimeMillis()
    const explicit = now + Duration.toMillis(Duration.decode(deadlineAfter))
    deadline = deadline === undefined ? explicit : Math.min(deadline, explicit)
  }
  if (span === undefined && deadline === undefined) return undefined
  return {
    ...(span === undefined ? {} : { trace: { traceId: span.traceId, spanId: span.spanId, sampled: span.sampled } }),
    ...(deadline === undefined ? {} : { deadline })
  }
}

/**
 * The context of an offer made now by the current fiber, with `deadlineAfter` as an explicit deadline from
 * now (the sooner of it and the fiber's own wins).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware, Propagation } from "keel"
 *
 * const program = Effect.gen(function*() {
 *   const deadline = yield* Middleware.deadline({ after: "2 seconds" })
 *   // inside the call: { deadline: <now + 2 s> }, and { trace } too when a tracer is installed
 *   return yield* deadline(() => Propagation.capture())(undefined)
 * }).pipe(Effect.scoped)
 * ```
 */
export const capture = (deadlineAfter?: Duration.DurationInput): Effect.Effect<Carried | undefined> =>
  Effect.withFiberRuntime((fiber) => Effect.succeed(captureFrom(fiber, deadlineAfter)))

/** The offering span as a parent or link target for the job's own span, when the job carries one. */
export const parentSpan = (context: Carried | undefined): Tracer.ExternalSpan | undefined =>
  context?.trace === undefined ? undefined : Tracer.externalSpan(context.trace)

/** `context` as JSON text, for a backend that stores text; the empty string for no context. */
export const encode = (context: Carried | undefined): string =>
  context === undefined ? "" : JSON.stringify(context)

const isHex = (text: unknown, length: number): text is string =>
  typeof text === "string" && text.length === length && /^[0-9a-f]+$/.test(text)

/**
 * The context `encode` wrote, read back; undefined for the empty string or text that is not one (a backend
 * shared with an older writer, or damaged data): a job never fails for the context it carries.
 */
export const decode = (text: string | null | undefined): Carried | undefined => {
  if (text === undefined || text === null || text === "") return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof parsed !== "object" || parsed === null) return undefined
  const { deadline, trace } = parsed as { deadline?: unknown; trace?: Partial<Record<keyof TraceParent, unknown>> }
  const validTrace = typeof trace === "object" && trace !== null && isHex(trace.traceId, 32) &&
    isHex(trace.spanId, 16) && typeof trace.sampled === "boolean"
  const validDeadline = typeof deadline === "number" && Number.isFinite(deadline)
  if (!validTrace && !validDeadline) return undefined
  return {
    ...(validTrace ? { trace: { traceId: trace.traceId as string, spanId: trace.spanId as string, sampled: trace.sampled as boolean } } : {}),
    ...(validDeadline ? { deadline } : {})
  }
}
