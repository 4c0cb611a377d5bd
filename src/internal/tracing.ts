/**
 * Tracing that costs nothing when it is off.
 *
 * Effect always has a tracer: without one installed it is its native tracer, which keeps spans in memory and
 * exports them nowhere, yet a `withSpan` still makes a span object and a context per call. On a path run for
 * every request or job that is a measurable share of the work, for nothing anyone can read. So Keel opens its
 * spans, and records its middleware's decisions as span events, only when an application installed a tracer
 * of its own (keel/otel, or any `Layer.setTracer`) and has not turned tracing off (`Effect.withTracerEnabled`);
 * deciding that is one lookup in the fiber's services.
 */
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Option from "effect/Option"
import type * as Runtime from "effect/Runtime"
import * as Tracer from "effect/Tracer"
import { clockOf } from "./fiberClock.js"

/** The tracer Effect runs with when no application installed one: its spans go nowhere. */
const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** The tracer of `fiber` when spans opened there are exported somewhere; undefined when tracing is off. */
export const activeTracer = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Tracer.Tracer | undefined => {
  const tracer = Context.get(fiber.currentDefaultServices, Tracer.Tracer)
  return tracer === nativeTracer || !fiber.getFiberRef(FiberRef.currentTracerEnabled) ? undefined : tracer
}

/** Whether spans opened by fibers of `runtime` are exported somewhere, as `activeTracer` decides for a fiber. */
export const isTracingIn = (runtime: Runtime.Runtime<never>): boolean => {
  const services = FiberRefs.getOrDefault(runtime.fiberRefs, DefaultServices.currentServices)
  return Context.get(services, Tracer.Tracer) !== nativeTracer &&
    FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentTracerEnabled)
}

/** Whether spans opened in `fiber` are exported somewhere. */
export const isTracing = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean => activeTracer(fiber) !== undefined

/** The span (or external span) `fiber` runs in, when tracing is on and it runs in one. */
export const currentParent = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Tracer.AnySpan | undefined => {
  if (!isTracing(fiber)) return undefined
  return Option.getOrUndefined(Context.getOption(fiber.currentContext, Tracer.ParentSpan))
}

/** The span `fiber` runs in, when tracing is on and it runs in one of this process's. */
export const currentSpan = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Tracer.Span | undefined => {
  const parent = currentParent(fiber)
  return parent?._tag === "Span" ? parent : undefined
}

/**
 * Records `name` with `attributes` as an event of the span `fiber` runs in; nothing when tracing is off or
 * there is no span. For decisions a middleware takes (a timeout fired, a retry scheduled, a call refused).
 */
export const event = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  name: string,
  attributes: Record<string, unknown>
): void => {
  const span = currentSpan(fiber)
  if (span === undefined) return
  span.event(name, clockOf(fiber).unsafeCurrentTimeNanos(), attributes)
}

/** `event` as an Effect, for a decision taken where no fiber is at hand: nothing when tracing is off. */
export const recordEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    event(fiber, name, attributes)
    return Effect.void
  })

/**
 * `effect` in a span `name` (made by `options`, read only when tracing is on) when tracing is on in the fiber
 * that runs it; `effect` itself otherwise.
 */
export const traced = <A, E, R>(
  name: string,
  options: () => Tracer.SpanOptions,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => isTracing(fiber) ? Effect.withSpan(effect, name, options()) : effect)
