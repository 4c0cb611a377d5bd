/**
 * retry — Tower's RetryLayer with a Backoff schedule, a typed predicate, a retry budget and the caller's
 * deadline.
 *
 * Retrying at every layer of a call graph multiplies load exactly when a dependency is failing: three
 * layers retrying three times each turn one request into 27 (a retry storm). So, as Tower's `TpsBudget`
 * and Envoy's retry budgets do, every call deposits into a budget and every retry withdraws from it: a retry
 * is allowed while the retries in the last `window` stay within `minPerSecond · windowSeconds + ratio · calls`
 * in that window. Past it the call stops retrying and fails with its last error, unchanged. The window slides
 * over ten Clock-driven buckets; the budget forgets a call one bucket early and a retry one bucket late, so
 * the bound holds for every window of length `window` that ends at a retry, never by approximation in the
 * caller's disfavour.
 *
 * Budgets kept per layer would still compound: under a failing dependency each layer would add its own
 * ratio of the load it sees, the retries of the layers above included. So the budget travels with the call
 * in fiber context, as the caller's deadline does (`deadline.ts`): a call through a middleware with a budget
 * that finds none enclosing it deposits into its own and installs it for everything beneath it, for as long
 * as the call runs. Every retry beneath it — of nested layers, of retried calls the service makes, of fibers
 * the call forks (they inherit it, as they inherit the deadline) — withdraws from that one budget, so the
 * retries a call tree adds stay within the outermost budget however deep retries nest. Sibling and later
 * calls never see it. A nested call does not deposit: one call from outside is one deposit, and retries are
 * what the budget counts. If nested calls deposited, every retry above would fund more retries below, and
 * the allowance would grow with the depth of the stack. Finagle does the same where one budget spans its
 * requeue and retry filters (the lower filter only withdraws), and Envoy counts a request once however
 * often it is retried; Tower keeps a budget per `Retry` layer, which is what compounds. The budget of a
 * nested layer is neither charged nor credited: it governs only the calls that reach it with none enclosing.
 *
 * A layer with `budget: false` brings no budget of its own and hides none: beneath a budgeted call its
 * retries withdraw from that call's budget like any other; with none enclosing, its schedule alone limits
 * them, and a budgeted layer beneath it governs each of its attempts as a call. Metrics belong to the layer
 * that decided: `keel_retry_retries_total` to the layer that retried, `keel_retry_budget_exhausted_total`
 * to the layer that wanted to retry and was refused, whichever layer's budget refused it.
 *
 * Which failures are retried and how long to wait are the schedule's (a `Backoff.Policy` with its
 * `retryOn`, by default `Backoff.isRetryable`: `Timeout` and `Unavailable`, never `Invalid`). Defects and
 * interruptions are never retried. Before waiting a delay the middleware reads the caller's deadline
 * (`deadline.ts`): if the next attempt could not start before it, the call stops at once with its last
 * error instead of sleeping into a timeout.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import type * as Scope from "effect/Scope"
import * as Backoff from "../Backoff.js"
import { remainingFor } from "../internal/deadline.js"
import { clockOf } from "../internal/fiberClock.js"
import * as MetricSeries from "../internal/MetricSeries.js"
import { event } from "../internal/tracing.js"
import * as Validation from "../internal/Validation.js"
import type { Middleware, Service } from "./Middleware.js"

/**
 * A retry budget: within any `window`, retries stay within `minPerSecond · windowSeconds + ratio · calls`,
 * where calls are those that deposited in that window (calls through the middleware that no budgeted retry
 * call encloses) and retries are all the retries beneath them, nested layers' included. Invalid values (a
 * negative or non-finite number, a window that is not a positive finite duration) are a defect when the
 * middleware is built.
 */
export interface RetryBudgetOptions {
  /** Retries may add at most this fraction of the calls in the window (0.2: at most one retry per 5 calls). */
  readonly ratio: number
  /** Retries always allowed, per second of `window`, however few calls there were (10: 100 per 10 s). */
  readonly minPerSecond: number
  /** The sliding window both counts are taken over, e.g. `"10 seconds"`; cut into ten Clock-driven buckets. */
  readonly window: Duration.DurationInput
}

/**
 * How `retry` retries.
 *
 * @typeParam E - The failures the schedule (or the policy's `retryOn`) is fed.
 */
export interface RetryOptions<E> {
  /**
   * When to retry and how long to wait first. A `Backoff.Policy` is turned into `Backoff.exponential`; any
   * other `Schedule` over the failures is used as it is. The schedule is fed the wrapped service's failures,
   * so a custom `retryOn` must accept every error that service can fail with.
   */
  readonly backoff: Backoff.Policy<E> | Schedule.Schedule<unknown, E>
  /**
   * The budget of every call through this middleware that no budgeted retry call encloses: such a call
   * deposits into it, and every retry beneath the call, nested retry layers' included, withdraws from it. A
   * call that an enclosing call's budget already governs uses that one (the outermost governs) and leaves
   * this one untouched. `false`: the layer brings no budget, but its retries still withdraw from an
   * enclosing one. Default `defaultRetryBudget`.
   */
  readonly budget?: RetryBudgetOptions | false
  /** Tags the metrics (`middleware=<name>`). Default `"retry"`. */
  readonly name?: string
}

/** Finagle's and Tower's defaults: retries add at most 20 % of calls, plus 10 per second. */
export const defaultRetryBudget: RetryBudgetOptions = { ratio: 0.2, minPerSecond: 10, window: "10 seconds" }

const retryCounters = {
  retries: Metric.counter("keel_retry_retries_total", { description: "retries started", incremental: true }),
  budgetExhausted: Metric.counter("keel_retry_budget_exhausted_total", {
    description: "calls that stopped retrying because the retry budget refused",
    incremental: true
  }),
  deadlineExhausted: Metric.counter("keel_retry_deadline_exhausted_total", {
    description: "calls that stopped retrying because the next attempt could not start before the deadline",
    incremental: true
  })
}

/** The metric series of one retry middleware, as `retryMetrics` returns them. */
export interface RetryMetrics {
  /** `keel_retry_retries_total`: retries started (attempts after each call's first). */
  readonly retries: Metric.Metric.Counter<number>
  /**
   * `keel_retry_budget_exhausted_total`: calls that stopped retrying because the retry budget refused,
   * counted by the layer that wanted to retry, whichever layer's budget governed the call.
   */
  readonly budgetExhausted: Metric.Metric.Counter<number>
  /**
   * `keel_retry_deadline_exhausted_total`: calls that stopped retrying because the next attempt could not
   * start before the caller's deadline.
   */
  readonly deadlineExhausted: Metric.Metric.Counter<number>
}

/** The metrics of the retry middleware named `name` (tagged `middleware=<name>`), to read or export them. */
export const retryMetrics = (name: string): RetryMetrics => {
  const series = MetricSeries.series("middleware", name)
  return {
    retries: series.of(retryCounters.retries),
    budgetExhausted: series.of(retryCounters.budgetExhausted),
    deadlineExhausted: series.of(retryCounters.deadlineExhausted)
  }
}

/**
 * The retry middleware. Its budget is state shared by every call through the middleware, so it is built
 * once (in a Scope, like every middleware) and then stacked. Dies with `IllegalArgumentException` naming an
 * invalid option (of the budget or of a `Backoff.Policy`).
 *
 * Nested retries share one budget: the outermost call through a budgeted `retry` deposits into its budget,
 * and every retry beneath that call — of nested `retry` layers, of retried calls the service makes, in
 * fibers it forks — withdraws from it, so stacked layers no longer multiply retries. The budget governs for
 * the duration of that call only; calls after it and beside it use their own.
 *
 * It adds no error of its own: a call that stops retrying (the schedule is done or refuses the failure,
 * the budget refuses, or the next attempt could not start before the caller's deadline) fails with its
 * last error, unchanged. Defects and interruptions are never retried. Place a `timeout` below it to bound
 * each attempt, a `deadline` above it to bound them all.
 *
 * @typeParam E - The failures the schedule inspects; the services it wraps must fail only with those (in a
 * `stack`, the whole stack's services).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware, Unavailable } from "keel"
 *
 * let calls = 0
 * const flaky = (id: number) =>
 *   Effect.suspend(() => ++calls < 3 ? Effect.fail(new Unavailable({ reason: "blip" })) : Effect.succeed(id))
 *
 * const program = Effect.gen(function*() {
 *   const retry = yield* Middleware.retry({ backoff: { base: "50 millis", max: "1 second", maxAttempts: 4 } })
 *   return yield* retry(flaky)(1) // succeeds on the third attempt
 * }).pipe(Effect.scoped)
 * ```
 */
export const retry = <E = unknown>(
  options: RetryOptions<E>
): Effect.Effect<Middleware<never, never, unknown, E>, never, Scope.Scope> =>
  Effect.suspend(() => {
    const schedule = Schedule.isSchedule(options.backoff)
      ? options.backoff as Schedule.Schedule<unknown, E>
      : Backoff.exponential(options.backoff)
    const budgetOptions = options.budget ?? defaultRetryBudget
    const ownBudget = budgetOptions === false ? undefined : new RetryBudget(validBudget(budgetOptions))
    const tags = MetricSeries.series("middleware", options.name ?? "retry").labels

    const middleware = <Req, Res, EService, R>(service: Service<Req, Res, EService, R>): Service<Req, Res, EService, R> =>
    (request) => {
      const attempt = Effect.suspend(() => service(request))

      const stop = (cause: Cause.Cause<EService>, reason: Metric.Metric.Counter<number>) =>
        Effect.suspend(() => {
          reason.unsafeUpdate(1, tags)
          return Effect.failCause(cause)
        })

      const afterFailure = (cause: Cause.Cause<EService>, state: unknown): Effect.Effect<Res, EService, R> => {
        const failure = Cause.failureOrCause(cause)
        if (Either.isRight(failure)) return Effect.failCause(cause)
        return Effect.withFiberRuntime((fiber) => {
          const clock = clockOf(fiber)
          const now = clock.unsafeCurrentTimeMillis()
          return Effect.flatMap(schedule.step(now, failure.left as unknown as E, state), ([nextState, _, decision]) => {
            if (ScheduleDecision.isDone(decision)) return Effect.failCause(cause)
            const delayMillis = Math.max(0, ScheduleIntervals.start(decision.intervals) - now)
            const left = remainingFor(fiber)
            if (Option.isSome(left) && delayMillis >= Duration.toMillis(left.value)) {
              event(fiber, "keel.retry.deadline_exhausted", { "keel.retry.delay_ms": delayMillis })
              return stop(cause, retryCounters.deadlineExhausted)
            }
            const budget = fiber.getFiberRef(governingBudget)
            // Refused now is likely refused after the delay too (unless calls arrive or old retries leave the
            // window meanwhile): the caller learns it without waiting. Only the withdrawal at the attempt
            // itself counts, so a call interrupted while it waits has spent nothing.
            if (budget !== undefined && !budget.allows(now)) {
              event(fiber, "keel.retry.budget_exhausted", {})
              return stop(cause, retryCounters.budgetExhausted)
            }
            event(fiber, "keel.retry.scheduled", { "keel.retry.delay_ms": delayMillis })
            const retryNow = Effect.suspend(() => {
              if (budget !== undefined && !budget.withdraw(clock.unsafeCurrentTimeMillis())) {
                return stop(cause, retryCounters.budgetExhausted)
              }
              retryCounters.retries.unsafeUpdate(1, tags)
              return attempts(nextState)
            })
            return delayMillis > 0 ? Effect.zipRight(Effect.sleep(Duration.millis(delayMillis)), retryNow) : retryNow
          })
        })
      }

      const attempts = (state: unknown): Effect.Effect<Res, EService, R> =>
        Effect.catchAllCause(attempt, (cause) => afterFailure(cause, state))

      if (ownBudget === undefined) return attempts(schedule.initial)
      return Effect.withFiberRuntime((fiber) => {
        if (fiber.getFiberRef(governingBudget) !== undefined) return attempts(schedule.initial)
        ownBudget.deposit(clockOf(fiber).unsafeCurrentTimeMillis())
        return governedBy(ownBudget, attempts(schedule.initial))
      })
    }
    return Effect.succeed(middleware as Middleware<never, never, unknown, E>)
  })

// ---------------------------------------------------------------------------------------------------------

/** The budget every retry in the running call withdraws from; none outside any budgeted retry call. */
const governingBudget = FiberRef.unsafeMake<RetryBudget | undefined>(undefined)

const leaveGoverningBudget = FiberRef.set(governingBudget, undefined)

/**
 * Runs `call` with `budget` governing every retry beneath it, and takes it away when the call ends, however
 * it ends. `Effect.locally` would do the same with about twice the operations (it reads the value to restore
 * and goes through `acquireUseRelease`), on every outermost call; here there is never a budget to restore.
 */
const governedBy = <A, E, R>(budget: RetryBudget, call: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.zipRight(
      FiberRef.set(governingBudget, budget),
      Effect.matchCauseEffect(restore(call), {
        onFailure: (cause) => Effect.zipRight(leaveGoverningBudget, Effect.failCause(cause)),
        onSuccess: (value) => Effect.as(leaveGoverningBudget, value)
      })
    )
  )


interface ValidBudget {
  readonly ratio: number
  readonly minPerSecond: number
  readonly windowMillis: number
}

/** The budget's options, checked (an invalid one throws `IllegalArgumentException`, a defect of `retry`). */
const validBudget = (options: RetryBudgetOptions): ValidBudget => {
  const { minPerSecond, ratio } = options
  const window = Validation.tryDuration(options.window)
  Validation.assertValid("Middleware.retry", [
    ["budget.ratio", ratio, Number.isFinite(ratio) && ratio >= 0, "a finite number ≥ 0"],
    ["budget.minPerSecond", minPerSecond, Number.isFinite(minPerSecond) && minPerSecond >= 0, "a finite number ≥ 0"],
    ["budget.window", window ?? options.window, window !== undefined && Validation.isPositiveFinite(window), "a finite duration > 0"]
  ])
  return { ratio, minPerSecond, windowMillis: Duration.toMillis(window!) }
}

/** The window is cut in this many buckets; one more is kept so that retries are remembered a bucket late. */
const buckets = 10

/**
 * Calls and retries per time bucket, in a ring of `buckets + 1` slots. At an instant in bucket k, calls are
 * summed over buckets k−9..k (which lie inside the last window) and retries over k−10..k (which cover it):
 * both errors make the budget stricter, so `retries ≤ reserve + ratio · calls` holds for the exact window.
 */
class RetryBudget {
  private readonly slots = buckets + 1
  private readonly bucketInSlot = new Array<number>(buckets + 1).fill(-1)
  private readonly callsInSlot = new Array<number>(buckets + 1).fill(0)
  private readonly retriesInSlot = new Array<number>(buckets + 1).fill(0)
  private readonly options: ValidBudget
  private readonly reserve: number

  constructor(options: ValidBudget) {
    this.options = options
    this.reserve = options.minPerSecond * options.windowMillis / 1000
  }

  deposit(now: number): void {
    this.callsInSlot[this.slotAt(now)]!++
  }

  allows(now: number): boolean {
    const bucket = this.bucketAt(now)
    let calls = 0
    let retries = 0
    for (let back = 0; back <= buckets && bucket - back >= 0; back++) {
      const slot = (bucket - back) % this.slots
      if (this.bucketInSlot[slot] !== bucket - back) continue
      retries += this.retriesInSlot[slot]!
      if (back < buckets) calls += this.callsInSlot[slot]!
    }
    return retries + 1 <= this.reserve + this.options.ratio * calls
  }

  withdraw(now: number): boolean {
    if (!this.allows(now)) return false
    this.retriesInSlot[this.slotAt(now)]!++
    return true
  }

  // Integer arithmetic where it can be: `now · buckets / window` is exact for whole milliseconds.
  private bucketAt(now: number): number {
    return Math.max(0, Math.floor(now * buckets / this.options.windowMillis))
  }

  private slotAt(now: number): number {
    const bucket = this.bucketAt(now)
    const slot = bucket % this.slots
    if (this.bucketInSlot[slot] !== bucket) {
      this.bucketInSlot[slot] = bucket
      this.callsInSlot[slot] = 0
      this.retriesInSlot[slot] = 0
    }
    return slot
  }
}
