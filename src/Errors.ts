/**
 * Keel's typed errors.
 *
 * Every failure a caller can see is data: a `Data.TaggedError` carrying exactly the fields needed to act
 * on it (how long to wait, what the limit was, why intake is closed). Callers match on `_tag` with
 * `Effect.catchTag`; nothing is ever a bare string or an `Error` thrown from deep inside.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"

/** Intake is closed because the service is draining; the work was not accepted. */
export class ShuttingDown extends Data.TaggedError("ShuttingDown")<{
  /** Why the service is draining: a signal's name or the reason given to `Lifecycle.shutdown`. */
  readonly reason: string
}> {
  /** `shutting down: <reason>`. */
  override get message() {
    return `shutting down: ${this.reason}`
  }
}

/** A bounded queue is full and the caller asked not to wait. */
export class QueueFull extends Data.TaggedError("QueueFull")<{
  /** How many items the full queue holds at most. */
  readonly capacity: number
}> {
  /** `queue full (capacity <capacity>)`. */
  override get message() {
    return `queue full (capacity ${this.capacity})`
  }
}

/** An accepted job was pushed out of a full queue by a newer one (the `dropOldest` strategy). */
export class Evicted extends Data.TaggedError("Evicted")<{
  /** How many jobs the queue holds at most; it was full when the newer job arrived. */
  readonly capacity: number
}> {
  /** `evicted from a full queue (capacity <capacity>) by a newer job`. */
  override get message() {
    return `evicted from a full queue (capacity ${this.capacity}) by a newer job`
  }
}

/** Work did not finish within its time limit and was interrupted. */
export class Timeout extends Data.TaggedError("Timeout")<{
  /** The limit that ran out: the one configured, or what was left of the caller's deadline when that was less. */
  readonly after: Duration.Duration
}> {
  /** `timed out after <after>`, the duration formatted (e.g. `timed out after 1s`). */
  override get message() {
    return `timed out after ${Duration.format(this.after)}`
  }
}

/** A dependency cannot serve now; worth retrying, not before `retryAfter` when it is given. */
export class Unavailable extends Data.TaggedError("Unavailable")<{
  /** What cannot serve and why, in words. */
  readonly reason: string
  /** The earliest time worth retrying after, when the dependency said; absent when unknown. */
  readonly retryAfter?: Duration.Duration
}> {
  /** `unavailable: <reason>`, followed by `(retry after <retryAfter>)` when `retryAfter` is given. */
  override get message() {
    return this.retryAfter === undefined
      ? `unavailable: ${this.reason}`
      : `unavailable: ${this.reason} (retry after ${Duration.format(this.retryAfter)})`
  }
}

/** An input (a request body, a frame) is over its size limit; it was refused before being read whole. */
export class TooLarge extends Data.TaggedError("TooLarge")<{
  /** What was too large, e.g. `request body`. */
  readonly what: string
  /** The limit, in bytes. */
  readonly limit: number
}> {
  /** `<what> over the limit of <limit> bytes`. */
  override get message() {
    return `${this.what} over the limit of ${this.limit} bytes`
  }
}

/** The input is wrong; retrying the same input cannot help. */
export class Invalid extends Data.TaggedError("Invalid")<{
  /** What is wrong with the input, in words (e.g. `invalid JSON: ...`). */
  readonly reason: string
}> {
  /** `invalid: <reason>`. */
  override get message() {
    return `invalid: ${this.reason}`
  }
}

// ---------------------------------------------------------------------------------------------------------
// Context at boundaries (anyhow's `.context`) and readable chains.
//
// Libraries fail with typed errors; where a failure crosses a task boundary the caller adds what it was
// doing, and the chain reads outermost first: "GPU diagnostic failed: IPMI command failed: timeout". The
// context is kept beside the error rather than around it: the error that comes out is a copy of the one that
// went in — same class, same fields, same `_tag` — that also carries the chain, so `catchTag`, retry and
// breaker predicates and the HTTP status of a rejection see it as they would without the context. Defects
// carry the context the same way (so a panic also says where it happened), and interruption is left alone:
// it is not a failure.
// ---------------------------------------------------------------------------------------------------------

/** Where an error keeps the contexts `withContext` added: a non-enumerable property, so equality ignores it. */
const contextsKey: unique symbol = Symbol.for("keel/Errors/contexts")

/**
 * What the callers were doing when `error` happened, outermost first, as `withContext` added it; empty when
 * no context was added (or `error` is not an object, which cannot carry one).
 *
 * @example
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Timeout, contextOf, withContext } from "keel"
 *
 * const program = Effect.fail(new Timeout({ after: Duration.seconds(1) })).pipe(
 *   withContext("IPMI command failed"),
 *   withContext("GPU diagnostic failed"),
 *   // Still a Timeout: ["GPU diagnostic failed", "IPMI command failed"] and "timed out after 1s"
 *   Effect.catchTag("Timeout", (timeout) => Effect.log(contextOf(timeout), timeout.message))
 * )
 * ```
 */
export const contextOf = (error: unknown): ReadonlyArray<string> =>
  typeof error === "object" && error !== null && contextsKey in error
    ? (error as { readonly [contextsKey]: ReadonlyArray<string> })[contextsKey]
    : []

/**
 * `error` with `context` added outermost: a copy with the same prototype and own properties (its class, tag,
 * fields and stack), so nothing that inspects the error can tell it apart but `contextOf`. A value that is
 * not an object cannot carry context and is returned as it is.
 */
const addContext = <E>(error: E, context: string): E => {
  if (typeof error !== "object" || error === null) return error
  const copy = Object.create(Object.getPrototypeOf(error), Object.getOwnPropertyDescriptors(error))
  Object.defineProperty(copy, contextsKey, {
    value: [context, ...contextOf(error)],
    enumerable: false,
    configurable: true
  })
  return copy
}

/** One line for any error value: its contexts, outermost first, then its message (or its tag). */
export const describe = (error: unknown): string =>
  [...contextOf(error), ownDescription(error)].join(": ")

const ownDescription = (error: unknown): string => {
  if (error instanceof Error && error.message !== "") return error.message
  if (typeof error === "object" && error !== null && "_tag" in error) return String(error._tag)
  if (error instanceof Error) return error.name
  return typeof error === "string" ? error : String(error)
}

const causeWithContext = (context: string) => <E>(cause: Cause.Cause<E>): Cause.Cause<E> =>
  Cause.match(cause, {
    onEmpty: Cause.empty,
    onFail: (error) => Cause.fail(addContext(error, context)),
    onDie: (defect) => Cause.die(addContext(defect, context)),
    onInterrupt: (fiberId) => Cause.interrupt(fiberId),
    onSequential: (left, right) => Cause.sequential(left, right),
    onParallel: (left, right) => Cause.parallel(left, right)
  })

/**
 * Adds `context` to every failure and defect of `self`; interruption is left as it is. The error keeps its
 * type, class and tag — `Effect.catchTag`, `Backoff.isRetryable`, the retry and circuit-breaker predicates
 * and `withMiddleware`'s HTTP statuses treat it as they treat the bare error — and carries the context
 * beside it: `contextOf(error)` lists it, `render` and `describe` print the chain. Stacking gives the chain,
 * outermost first. An error that is not an object (a string) cannot carry context and passes unchanged.
 *
 * @example
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Timeout, render, withContext } from "keel"
 *
 * const program = Effect.fail(new Timeout({ after: Duration.seconds(1) })).pipe(
 *   withContext("IPMI command failed"),
 *   withContext("GPU diagnostic failed"),
 *   Effect.sandbox,
 *   // "GPU diagnostic failed: IPMI command failed: timed out after 1s"
 *   Effect.catchAll((cause) => Effect.log(render(cause)))
 * )
 * ```
 */
export const withContext = (context: string) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.mapErrorCause(self, causeWithContext(context))

/**
 * A cause as readable lines: a failure as its chain, a defect as `defect: <chain>`, an interruption as
 * `interrupted`. Concurrent and sequential failures each get their own line.
 */
export const render = (cause: Cause.Cause<unknown>): string => {
  const lines = [
    ...Chunk.toArray(Cause.failures(cause)).map(describe),
    ...Chunk.toArray(Cause.defects(cause)).map((defect) => `defect: ${describe(defect)}`),
    ...(Cause.isInterrupted(cause) ? ["interrupted"] : [])
  ]
  return lines.length === 0 ? "no failure" : lines.join("\n")
}

// ---------------------------------------------------------------------------------------------------------
// Joining a task (the seed's double `?`): one error channel that keeps "the task failed" and "the task
// panicked" apart, each naming the task.
// ---------------------------------------------------------------------------------------------------------

/**
 * The task ended with a typed failure. Made by `joinTask`.
 *
 * @typeParam E - The task's error type.
 */
export class TaskFailed<E> extends Data.TaggedError("TaskFailed")<{
  /** The task's name, as given to `joinTask`. */
  readonly task: string
  /** The task's typed failure (the first one, when it failed more than once). */
  readonly error: E
}> {
  /** `task <task> failed: <the error described>`. */
  override get message() {
    return `task ${this.task} failed: ${describe(this.error)}`
  }
}

/** The task died with a defect (a thrown exception, a bug). Made by `joinTask`. */
export class TaskPanicked extends Data.TaggedError("TaskPanicked")<{
  /** The task's name, as given to `joinTask`. */
  readonly task: string
  /** What the task died with: the thrown value, or the first defect of its Cause. */
  readonly defect: unknown
}> {
  /** `task <task> panicked: <the defect described>`. */
  override get message() {
    return `task ${this.task} panicked: ${describe(this.defect)}`
  }
}

/**
 * Waits for a task's fiber and turns its end into one typed error channel: `TaskFailed` for a failure,
 * `TaskPanicked` for a defect. If the task was interrupted, the joiner is interrupted too.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { joinTask } from "keel"
 *
 * const program = Effect.gen(function*() {
 *   const fiber = yield* Effect.fork(Effect.dieMessage("bug"))
 *   yield* joinTask("diagnostic", fiber)
 * }).pipe(
 *   Effect.catchTags({
 *     TaskFailed: (failed) => Effect.logWarning(failed.message),
 *     TaskPanicked: (panicked) => Effect.logError(panicked.message) // task diagnostic panicked: bug
 *   })
 * )
 * ```
 */
export const joinTask = <A, E>(task: string, fiber: Fiber.Fiber<A, E>): Effect.Effect<A, TaskFailed<E> | TaskPanicked> =>
  Effect.flatMap(Fiber.await(fiber), (exit): Effect.Effect<A, TaskFailed<E> | TaskPanicked> => {
    if (Exit.isSuccess(exit)) return Effect.succeed(exit.value)
    const defect = Chunk.head(Cause.defects(exit.cause))
    if (Option.isSome(defect)) return Effect.fail(new TaskPanicked({ task, defect: defect.value }))
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) return Effect.fail(new TaskFailed({ task, error: failure.value }))
    return Effect.failCause(exit.cause as Cause.Cause<never>)
  })
