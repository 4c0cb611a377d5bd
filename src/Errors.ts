/**
 * Keel's typed errors.
 *
 * Every failure a caller can see is data: a `Data.TaggedError` carrying exactly the fields needed to act
 * on it (how long to wait, what the limit was, why intake is closed). Callers match on `_tag` with
 * `Effect.catchTag`; nothing is ever a bare string or an `Error` thrown from deep inside.
 *
 * Every error that refuses work — "not now" (a limit, a full queue, a drain, an open breaker) or "not like
 * this" (invalid or oversized input) — is defined here, whichever middleware or backend raises it, and is
 * a `Rejection`: it declares the HTTP status it is answered with and, when the wait is known, the
 * `Retry-After`. `withMiddleware` (keel/http) reads that from the error itself, so a new rejection cannot
 * fall through to a 500.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"

// ---------------------------------------------------------------------------------------------------------
// Rejections: errors that refuse work, each declaring how an HTTP server answers it.
// ---------------------------------------------------------------------------------------------------------

/** The key under which a `Rejection` carries its `HttpAnswer`. */
export const HttpAnswerKey: unique symbol = Symbol.for("keel/Errors/HttpAnswer")

/** How an HTTP server answers a rejection. */
export interface HttpAnswer {
  /** The status: 400, 413, 429, 503 or 504 for Keel's own rejections. */
  readonly status: number
  /** How long the client should wait before trying again (`Retry-After`), when it is known; none otherwise. */
  readonly retryAfter?: Duration.Duration
}

/**
 * An error that refuses work rather than failing it: the request was not served, and the error says how an
 * HTTP server answers it. Every rejection Keel raises is one; an application's own error class becomes one
 * by implementing `[HttpAnswerKey]`.
 *
 * @example
 * ```ts
 * import { Data } from "effect"
 * import { HttpAnswerKey, type HttpAnswer, type Rejection } from "keel"
 *
 * class QuotaExceeded extends Data.TaggedError("QuotaExceeded")<{ readonly plan: string }> implements Rejection {
 *   // withMiddleware answers it 402, like Keel's own rejections
 *   get [HttpAnswerKey](): HttpAnswer {
 *     return { status: 402 }
 *   }
 * }
 * ```
 */
export interface Rejection {
  /** The error's tag, sent as `error` in the answer's JSON body. */
  readonly _tag: string
  /** Sent as `message` in the answer's JSON body. */
  readonly message: string
  /** The status and `Retry-After` it is answered with. */
  readonly [HttpAnswerKey]: HttpAnswer
}

/** Whether `error` is a `Rejection` (it declares its HTTP answer), with or without context added. */
export const isRejection = (error: unknown): error is Rejection =>
  typeof error === "object" && error !== null && HttpAnswerKey in error

/** A wait a refusing component does not know, as the answer states it: come back in a second. */
const unknownWait = Duration.seconds(1)

/** Intake is closed because the service is draining; the work was not accepted. */
export class ShuttingDown extends Data.TaggedError("ShuttingDown")<{
  /** Why the service is draining: a signal's name or the reason given to `Lifecycle.shutdown`. */
  readonly reason: string
}> implements Rejection {
  /** 503 Service Unavailable, without `Retry-After`: this instance is going away, another should serve. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503 }
  }

  /** `shutting down: <reason>`. */
  override get message() {
    return `shutting down: ${this.reason}`
  }
}

/** A bounded queue is full and the caller asked not to wait. */
export class QueueFull extends Data.TaggedError("QueueFull")<{
  /** How many items the full queue holds at most. */
  readonly capacity: number
}> implements Rejection {
  /** 503 Service Unavailable, `Retry-After: 1`. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503, retryAfter: unknownWait }
  }

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
}> implements Rejection {
  /** 504 Gateway Timeout. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 504 }
  }

  /** `timed out after <after>`, the duration formatted (e.g. `timed out after 1s`). */
  override get message() {
    return `timed out after ${Duration.format(this.after)}`
  }
}

/**
 * A job's deadline passed: the deadline it was offered under (a request's `Middleware.deadline`, or the
 * `deadline` option of `submit` / `offer`) ran out before the job started, or while it ran (it was then
 * interrupted). Not worth retrying: whoever waited for the job has stopped waiting.
 */
export class DeadlineExceeded extends Data.TaggedError("DeadlineExceeded")<{
  /** The id of the job. */
  readonly id: string
  /** Whether the deadline passed before the job started (`before-start`) or while it ran (`while-running`). */
  readonly when: "before-start" | "while-running"
  /** How long past the deadline the job was when it was stopped. */
  readonly late: Duration.Duration
}> implements Rejection {
  /** 504 Gateway Timeout. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 504 }
  }

  /** `job <id>: deadline passed before it started (<late> late)` or `… while it ran …`. */
  override get message() {
    const when = this.when === "before-start" ? "before it started" : "while it ran"
    return `job ${this.id}: deadline passed ${when} (${Duration.format(this.late)} late)`
  }
}

/** A dependency cannot serve now; worth retrying, not before `retryAfter` when it is given. */
export class Unavailable extends Data.TaggedError("Unavailable")<{
  /** What cannot serve and why, in words. */
  readonly reason: string
  /** The earliest time worth retrying after, when the dependency said; absent when unknown. */
  readonly retryAfter?: Duration.Duration
}> implements Rejection {
  /** 503 Service Unavailable, with `Retry-After` when `retryAfter` is given. */
  get [HttpAnswerKey](): HttpAnswer {
    return this.retryAfter === undefined ? { status: 503 } : { status: 503, retryAfter: this.retryAfter }
  }

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
}> implements Rejection {
  /** 413 Content Too Large. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 413 }
  }

  /** `<what> over the limit of <limit> bytes`. */
  override get message() {
    return `${this.what} over the limit of ${this.limit} bytes`
  }
}

/** The input is wrong; retrying the same input cannot help. */
export class Invalid extends Data.TaggedError("Invalid")<{
  /** What is wrong with the input, in words (e.g. `invalid JSON: ...`). */
  readonly reason: string
}> implements Rejection {
  /** 400 Bad Request. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 400 }
  }

  /** `invalid: <reason>`. */
  override get message() {
    return `invalid: ${this.reason}`
  }
}

/** A limit refused the call instead of letting it wait; retry later, not before `retryAfter` when given. */
export class Overloaded extends Data.TaggedError("Overloaded")<{
  /** Which limit refused and why, in words (e.g. `concurrency limit: waiting queue full`). */
  readonly reason: string
  /**
   * How long to wait before trying again, when the refusing limit knows it; absent otherwise (Keel's
   * `concurrencyLimit` cannot tell when a permit frees up). `withMiddleware` sends it as `Retry-After`,
   * and 1 second when it is absent.
   */
  readonly retryAfter?: Duration.Duration
}> implements Rejection {
  /** 503 Service Unavailable, `Retry-After` from `retryAfter`, else 1 second. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503, retryAfter: this.retryAfter ?? unknownWait }
  }

  /** `overloaded: <reason>`, followed by ` (retry after <retryAfter>)` when the wait is known. */
  override get message() {
    return this.retryAfter === undefined
      ? `overloaded: ${this.reason}`
      : `overloaded: ${this.reason} (retry after ${Duration.format(this.retryAfter)})`
  }
}

/** The rate limit refused the call; a token is back, and the call could be admitted, after `retryAfter`. */
export class RateLimited extends Data.TaggedError("RateLimited")<{
  /**
   * How long from the refusal until the earliest slot this call could have had, after every earlier
   * admission and reservation: the wait it was spared. `withMiddleware` sends it as `Retry-After`.
   */
  readonly retryAfter: Duration.Duration
}> implements Rejection {
  /** 429 Too Many Requests, `Retry-After` from `retryAfter`. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 429, retryAfter: this.retryAfter }
  }

  /** `rate limited (retry after <retryAfter>)`, the duration formatted (e.g. `retry after 250ms`). */
  override get message() {
    return `rate limited (retry after ${Duration.format(this.retryAfter)})`
  }
}

/** The breaker refused the call without calling the service. */
export class CircuitOpen extends Data.TaggedError("CircuitOpen")<{
  /** The name of the breaker that refused (its `name` option, default `circuit-breaker`). */
  readonly breaker: string
  /** The breaker's state when it refused; `HalfOpen` means every trial slot was taken. */
  readonly state: "Open" | "HalfOpen" | "Isolated"
  /**
   * Open: the time left until trials are let through. Half-open: `openFor`, the wait if the running
   * trials fail (if they succeed, calls pass sooner). Isolated: infinity (until someone resets it).
   */
  readonly retryAfter: Duration.Duration
}> implements Rejection {
  /** 503 Service Unavailable, `Retry-After` from `retryAfter` (none for an isolated breaker: the wait is infinite). */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503, retryAfter: this.retryAfter }
  }

  /**
   * By state: `circuit <breaker> is open (retry after <retryAfter>)`, `circuit <breaker> is half-open
   * with every trial slot taken (retry after <retryAfter>)`, or `circuit <breaker> is isolated until reset`.
   */
  override get message() {
    switch (this.state) {
      case "Isolated":
        return `circuit ${this.breaker} is isolated until reset`
      case "HalfOpen":
        return `circuit ${this.breaker} is half-open with every trial slot taken (retry after ${
          Duration.format(this.retryAfter)
        })`
      case "Open":
        return `circuit ${this.breaker} is open (retry after ${Duration.format(this.retryAfter)})`
    }
  }
}

/** The store holds `capacity` records and none of them is finished, so none can be forgotten. */
export class StoreFull extends Data.TaggedError("StoreFull")<{
  /** The store's capacity: the most records it holds at once. */
  readonly capacity: number
}> implements Rejection {
  /** 503 Service Unavailable, `Retry-After: 1`: finished records become evictable as jobs end. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503, retryAfter: unknownWait }
  }

  /** `job store full (capacity <capacity>) and no finished job to evict`. */
  override get message() {
    return `job store full (capacity ${this.capacity}) and no finished job to evict`
  }
}

/** The backend could not reach its records (after its own bounded retries); nothing is known to have changed. */
export class StoreUnavailable extends Data.TaggedError("StoreUnavailable")<{
  /** What failed: the backend's call, its error and the tries made, e.g. `create: no reply within 2s (3 attempts)`. */
  readonly reason: string
}> implements Rejection {
  /** 503 Service Unavailable, without `Retry-After`. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503 }
  }

  /** `job store unavailable: <reason>`. */
  override get message() {
    return `job store unavailable: ${this.reason}`
  }
}

/**
 * The backend could not be reached, after the retries it makes itself (in bounded time, never hanging). The
 * embedded backend never fails with it. An operation that fails with it may have taken effect all the same.
 */
export class QueueUnavailable extends Data.TaggedError("QueueUnavailable")<{
  /** What failed: the backend's call and its error, e.g. `offer: no reply within 2s`. */
  readonly reason: string
}> implements Rejection {
  /** 503 Service Unavailable, without `Retry-After`. */
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 503 }
  }

  /** `job queue unavailable: <reason>`. */
  override get message() {
    return `job queue unavailable: ${this.reason}`
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
