/**
 * WorkerPool — N workers over a bounded queue, with backpressure and a drain that loses nothing.
 *
 * The Tokio version is an `mpsc::channel(100)`, workers looping on `recv`, and a `watch` to stop them;
 * what it leaves to the reader is what happens to the jobs. Here every accepted job ends in exactly one
 * outcome, decided in one place (`settle`): completed; failed, sent to the dead-letter sink with its
 * Cause and attempt count; or unfinished (interrupted at the deadline, or queued and handed back), named
 * in the shutdown report and passed to the hand-back sink. A defect in a job fails that job only; an
 * interruption is never counted as a failure.
 *
 * Backpressure is `Queue.bounded(capacity)`: `submit` suspends while it is full, `trySubmit` fails at once
 * with `QueueFull`. The pool is a scoped resource: closing its Scope (or Lifecycle draining) closes intake
 * with `ShuttingDown`; the drain finishes in-flight jobs and then drains the queue or hands it back, all
 * within the Lifecycle's one deadline, after which what is left is interrupted and listed.
 *
 * The same workers also run over a queue shared with other processes (`consume`: the JobQueue contract of
 * keel/services, on Redis or in memory). There a worker holds a job as a lease, which its loop settles or
 * releases on every path (a Scope per job would cost as much as the rest of the job's bookkeeping): renewed
 * every third of the lease duration while the job runs, acked when it completes, dead-lettered with its
 * rendered Cause when it fails, and released — back to the queue at once, for any consumer — when the job is
 * interrupted. A job whose lease is lost (it expired, so another consumer may be running it) is interrupted.
 * The drain stops taking, lets in-flight jobs finish, and at the deadline interrupts the rest, which releases
 * their leases so that another process takes them over without waiting for the lease to expire.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Runtime from "effect/Runtime"
import * as Scheduler from "effect/Scheduler"
import * as Scope from "effect/Scope"
import type * as Schedule from "effect/Schedule"
import { DeadlineExceeded, Evicted, QueueFull, render, ShuttingDown, Timeout } from "./Errors.js"
import { failAfter } from "./internal/callTimeout.js"
import { currentDeadline } from "./internal/deadline.js"
import { isTracing } from "./internal/tracing.js"
import * as LiveClock from "./internal/liveClock.js"
import { describeTrigger } from "./internal/lifecycle.js"
import { Lifecycle } from "./Lifecycle.js"
import * as MetricSeries from "./internal/MetricSeries.js"
import { retryAfterFailure } from "./internal/retryAfterFailure.js"
import * as Validation from "./internal/Validation.js"
import * as Waiters from "./internal/Waiters.js"
import * as Propagation from "./Propagation.js"

/**
 * How a full queue treats a new job (`Options.strategy`): `suspend` makes `submit` wait for room;
 * `dropNewest` refuses the new job, `submit` failing with `QueueFull`; `dropOldest` accepts it and evicts the
 * oldest queued job, which goes to the dead-letter sink with an `Evicted` failure.
 */
export type Strategy = "suspend" | "dropNewest" | "dropOldest"

/**
 * What a drain does with jobs still queued (`Options.onShutdown`): run them within the deadline (`drain`), or
 * return them unstarted to the hand-back sink at once (`handBack`).
 */
export type ShutdownPolicy = "drain" | "handBack"

/**
 * A job a pool accepted: its payload, with the id and acceptance time the pool gave it.
 *
 * @typeParam A - The payload's type.
 */
export interface Job<A> {
  /**
   * The job's id: the one given in `SubmitOptions.id`, else `<pool name>-<sequence>` (`worker-pool-1`, …);
   * for a job of `consume`, the shared queue's id. `submit` and `trySubmit` return it.
   */
  readonly id: string
  /** The value given to `submit` or `trySubmit` (or offered to the shared queue), as the handler receives it. */
  readonly payload: A
  /** Clock time (ms) when the job was accepted. */
  readonly enqueuedAt: number
  /**
   * What the job carries from where it was submitted (or offered to the shared queue): the span it was
   * submitted in, when tracing was on, and its deadline. Its run continues that span's trace, and is not
   * started after the deadline (it fails with `DeadlineExceeded`) nor let run past it.
   */
  readonly carried?: Propagation.Carried
}

/** What a handler knows about the job it runs. */
export interface JobContext {
  /** The id of the job being run (`Job.id`), e.g. to make a side effect idempotent. */
  readonly id: string
  /** 1 on the first run, 2 on the first retry, … (counted within one delivery). */
  readonly attempt: number
  /**
   * Which delivery of the job this is: always 1 in a pool's own queue; with `consume`, higher after a lease
   * was lost or released.
   */
  readonly delivery: number
}

/**
 * A job as a worker of `consume` holds it: one delivery, leased from a shared queue. A `JobQueue.Lease` of
 * keel/services is one.
 *
 * @typeParam A - The payload's type.
 */
export interface LeasedJob<A> extends Job<A> {
  /** Which delivery of the job this is, from 1 (the queue's count; attempts within it are the pool's). */
  readonly delivery: number
  /** Completes if the lease is lost (it expired and the job went back to the queue). */
  readonly lost: Effect.Effect<void>
  /**
   * Calls `listener` once, synchronously, when the lease is lost (at once if it is); returns how to stop
   * listening.
   */
  readonly onLost: (listener: () => void) => () => void
}

/**
 * A queue shared by consumers, as `consume` uses it. The JobQueue contract (`JobQueue.JobQueue` in
 * keel/services, with its memory and Redis backends) is one: pass the service itself.
 *
 * @typeParam A - The payload's type.
 */
export interface Source<A> {
  /** How long a lease lasts without `renew`; a running job's lease is renewed every third of it. */
  readonly leaseDuration: Duration.Duration
  /**
   * Waits for a job and leases it, without a Scope: `consume` settles or releases every lease it acquires (an
   * interrupted wait must lease nothing). A failure is logged and the take tried again a second later.
   */
  readonly acquire: Effect.Effect<LeasedJob<A>, unknown>
  /** The job is ready again at once, for any consumer. */
  readonly release: (lease: LeasedJob<A>) => Effect.Effect<void>
  /**
   * Extends the lease by `leaseDuration` from now. `consume` calls it for every running job, every third of
   * `leaseDuration`; a failure while the job still runs is logged, and the job goes on (a lost lease is
   * reported through `lost` / `onLost`, not here).
   */
  readonly renew: (lease: LeasedJob<A>) => Effect.Effect<void, unknown>
  /**
   * The job completed: it leaves the queue. Called once its outcome was observed; on failure `consume` logs
   * it and releases the lease, so the job runs again.
   */
  readonly ack: (lease: LeasedJob<A>) => Effect.Effect<void, unknown>
  /**
   * The job failed for good: it goes to the queue's dead letters with `reason`, the rendered Cause of its
   * last attempt. On failure `consume` logs it and releases the lease, so the job runs again.
   */
  readonly deadLetter: (lease: LeasedJob<A>, reason: string) => Effect.Effect<void, unknown>
}

/**
 * A job that failed for good, as the dead-letter sink (`Options.deadLetter`) and a `Failed` outcome carry it:
 * its last attempt failed (typed failure, `Timeout` or defect) with no retry left, or `dropOldest` evicted
 * it from the queue unstarted.
 *
 * @typeParam A - The payload's type.
 */
export interface FailedJob<A> {
  /** The job that failed. */
  readonly job: Job<A>
  /**
   * Why: the whole Cause of the last attempt (a typed failure, a `Timeout`, or a defect), or a failure with
   * `Evicted` for an evicted job. `render` (exported by keel) turns it into one line.
   */
  readonly cause: Cause.Cause<unknown>
  /** Attempts run in this delivery, retries included; 0 for an evicted job. */
  readonly attempts: number
}

/**
 * A job accepted but not finished: interrupted while it ran, or never started. A drain lists these in
 * `DrainResult.unfinished` and passes them to the hand-back sink at its end; one that ends so outside a
 * drain (a lost lease, with `consume`) is passed to the sink at once.
 *
 * @typeParam A - The payload's type.
 */
export interface Unfinished<A> {
  /** The job that did not finish. */
  readonly job: Job<A>
  /**
   * `interrupted`: it was running when waiting stopped; `notStarted`: still queued when the deadline came;
   * `handedBack`: returned unstarted by the `handBack` policy; `leaseLost`: its lease expired while it ran
   * (`consume`), so it was interrupted and the queue delivers it again.
   */
  readonly reason: "interrupted" | "notStarted" | "handedBack" | "leaseLost"
  /** Attempts started in this delivery before it stopped; 0 for a job that never started. */
  readonly attempts: number
}

/**
 * How an accepted job ended, as `Options.onOutcome` observes it. Every accepted job gets exactly one,
 * decided when it ends.
 *
 * @typeParam A - The payload's type.
 */
export type Outcome<A> =
  | {
    /** The handler succeeded, on some attempt. */
    readonly _tag: "Completed"
    /** The job that completed. */
    readonly job: Job<A>
    /** Attempts it took in this delivery, the successful one included. */
    readonly attempts: number
    /** What the handler succeeded with (untyped: the pool does not use it). */
    readonly result: unknown
  }
  | {
    /** The job failed for good, or was evicted: it went to the dead-letter sink. */
    readonly _tag: "Failed"
    /** The job, why it failed and after how many attempts. */
    readonly failure: FailedJob<A>
  }
  | {
    /** The job was interrupted while it ran, or never started: it is handed back. */
    readonly _tag: "Unfinished"
    /** The job, why it did not finish and after how many attempts. */
    readonly unfinished: Unfinished<A>
  }

/**
 * What `make` takes. Only `capacity`, `workers` and `handler` are required.
 *
 * @typeParam A - The payload's type.
 * @typeParam E - The handler's typed failures.
 * @typeParam R - The services the handler needs, required by `make` in turn.
 */
export interface Options<A, E, R> {
  /** Names the pool in metrics, ids and the shutdown report. Default `worker-pool`. */
  readonly name?: string
  /** Queue capacity: at most this many accepted jobs wait. A positive integer. */
  readonly capacity: number
  /** Number of worker fibers, i.e. jobs running at once. A positive integer. */
  readonly workers: number
  /**
   * Runs one attempt of a job, given its payload and context. A typed failure is retried per `retry`, then
   * the job is dead-lettered; a defect (or a throw instead of returning an Effect) fails the job at once,
   * without retry. It runs interruptibly: the drain's deadline, or a lost lease with `consume`, interrupts it.
   */
  readonly handler: (payload: A, job: JobContext) => Effect.Effect<unknown, E, R>
  /** What `submit` does when the queue is full (see `Strategy`). Default `suspend`. */
  readonly strategy?: Strategy
  /** Limit for one attempt; past it the attempt fails with `Timeout { after }` and is interrupted. */
  readonly timeout?: Duration.DurationInput
  /**
   * Retries failed attempts (typed failures and timeouts, never defects) on this schedule, such as a
   * `Backoff.exponential` policy. Default: no retry.
   */
  readonly retry?: Schedule.Schedule<unknown, E | Timeout>
  /** What the drain does with jobs still queued (see `ShutdownPolicy`). Default `drain`. */
  readonly onShutdown?: ShutdownPolicy
  /**
   * Receives every failed or evicted job. Default: a warning log with the rendered cause. Sinks run in the
   * worker, which waits for them: keep them short (hand slow storage to a queue of its own).
   */
  readonly deadLetter?: (failed: FailedJob<A>) => Effect.Effect<void>
  /** Receives the jobs a drain did not finish, once, at its end. Default: a warning log listing them. */
  readonly handBack?: (jobs: ReadonlyArray<Unfinished<A>>) => Effect.Effect<void>
  /**
   * Observes every outcome as it is decided. A failure is logged; with `consume` it also keeps the outcome from
   * the queue: the job is not acked (nor dead-lettered), its lease is released and it runs again.
   */
  readonly onOutcome?: (outcome: Outcome<A>) => Effect.Effect<void, unknown>
}

/** A pool's counters at one instant, as `stats` reads them. The totals count from the pool's start. */
export interface Stats {
  /** The pool's name (`Options.name`, default `worker-pool`). */
  readonly name: string
  /** The queue's capacity as configured; 0 for a consumer, whose queue is shared. */
  readonly capacity: number
  /** Number of worker fibers, as configured. */
  readonly workers: number
  /** Whether the pool still takes jobs: false once its intake is closed (for a consumer, once it stops taking). */
  readonly accepting: boolean
  /** Jobs waiting in the queue (never more than capacity). */
  readonly depth: number
  /** Producers suspended in `submit` because the queue is full. */
  readonly waitingProducers: number
  /** Jobs running now. */
  readonly inFlight: number
  /** Jobs accepted so far (for a consumer, leases taken), not counting producers still suspended in `submit`. */
  readonly accepted: number
  /** Jobs whose handler succeeded. */
  readonly completed: number
  /** Jobs whose last attempt failed (typed failure, timeout or defect). */
  readonly failed: number
  /** Attempts run again after a failure. */
  readonly retried: number
  /** Failed jobs plus evicted ones. */
  readonly deadLettered: number
  /** Jobs interrupted while running or never started (see `Unfinished`). */
  readonly unfinished: number
}

/**
 * What a drain did, as `shutdown` returns it; the same figures go to the Lifecycle's shutdown report.
 *
 * @typeParam A - The payload's type.
 */
export interface DrainResult<A> {
  /** How long the drain took, in ms of Clock time, from the moment intake closed. */
  readonly durationMs: number
  /** Jobs that completed or failed while the drain ran. */
  readonly finished: number
  /**
   * The jobs the drain did not finish: interrupted at the deadline, still queued then, or handed back (see
   * `Unfinished.reason`). The hand-back sink received the same list.
   */
  readonly unfinished: ReadonlyArray<Unfinished<A>>
}

/**
 * A running pool, as `make` returns it: submit jobs, watch its counters, wait for it to be idle, drain it.
 *
 * @typeParam A - The payload's type.
 */
export interface WorkerPool<A> {
  /**
   * Accepts a job and succeeds with its id, suspending while the queue is full (with `dropNewest` it fails
   * with `QueueFull` instead, with `dropOldest` it evicts the oldest queued job; neither suspends). Fails with
   * `ShuttingDown` once intake is closed.
   */
  readonly submit: (payload: A, options?: SubmitOptions) => Effect.Effect<string, ShuttingDown | QueueFull>
  /**
   * Accepts a job only if there is room now, and succeeds with its id; otherwise fails with `QueueFull`.
   * Fails with `ShuttingDown` once intake is closed.
   */
  readonly trySubmit: (payload: A, options?: SubmitOptions) => Effect.Effect<string, ShuttingDown | QueueFull>
  /** The pool's counters now (see `Stats`). */
  readonly stats: Effect.Effect<Stats>
  /** Completes when every accepted job has an outcome. */
  readonly awaitIdle: Effect.Effect<void>
  /** Closes intake and drains per policy within the deadline; the same result for every caller. */
  readonly shutdown: Effect.Effect<DrainResult<A>>
}

/** Options of `submit` and `trySubmit`. */
export interface SubmitOptions {
  /** Caller-chosen id; default `<pool name>-<sequence>`. The pool does not check that ids are unique. */
  readonly id?: string
  /**
   * The job must have ended within this long from now: it is not started after that (it fails with
   * `DeadlineExceeded`) and is interrupted when the time runs out. A job submitted under a deadline
   * (`Middleware.deadline`) carries that one; the sooner of the two wins. Default: the submitter's, if any.
   */
  readonly deadline?: Duration.DurationInput
}

const poolMetrics = {
  depth: Metric.gauge("keel_pool_queue_depth", { description: "jobs waiting in the queue" }),
  inFlight: Metric.gauge("keel_pool_in_flight", { description: "jobs running now" }),
  completed: Metric.counter("keel_pool_jobs_completed_total", { incremental: true }),
  failed: Metric.counter("keel_pool_jobs_failed_total", { incremental: true }),
  retried: Metric.counter("keel_pool_jobs_retried_total", { incremental: true }),
  deadLettered: Metric.counter("keel_pool_jobs_dead_lettered_total", { incremental: true }),
  unfinished: Metric.counter("keel_pool_jobs_unfinished_total", { incremental: true })
}

/**
 * The metrics of the pool named `pool` (tagged `pool=<name>`), to read them or to export them. Every pool
 * and consumer updates them as it goes (each series starts at 0 when the pool starts), and `Stats` shows the
 * same figures. Two pools of one name share their series.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { WorkerPool } from "keel"
 *
 * const completedEmails = Metric.value(WorkerPool.metrics("emails").completed)
 * const report = Effect.flatMap(completedEmails, (state) => Effect.log(`emails sent: ${state.count}`))
 * ```
 */
export const metrics = (pool: string): Metrics => {
  const series = MetricSeries.series("pool", pool)
  return {
    depth: series.of(poolMetrics.depth),
    inFlight: series.of(poolMetrics.inFlight),
    completed: series.of(poolMetrics.completed),
    failed: series.of(poolMetrics.failed),
    retried: series.of(poolMetrics.retried),
    deadLettered: series.of(poolMetrics.deadLettered),
    unfinished: series.of(poolMetrics.unfinished)
  }
}

/** The metric series of one pool, as `metrics` returns them. */
export interface Metrics {
  /** Gauge `keel_pool_queue_depth`: jobs waiting in the queue. */
  readonly depth: Metric.Metric.Gauge<number>
  /** Gauge `keel_pool_in_flight`: jobs running now. */
  readonly inFlight: Metric.Metric.Gauge<number>
  /** Counter `keel_pool_jobs_completed_total`: jobs whose handler succeeded. */
  readonly completed: Metric.Metric.Counter<number>
  /** Counter `keel_pool_jobs_failed_total`: jobs whose last attempt failed (evictions not counted). */
  readonly failed: Metric.Metric.Counter<number>
  /** Counter `keel_pool_jobs_retried_total`: attempts run again after a failure. */
  readonly retried: Metric.Metric.Counter<number>
  /** Counter `keel_pool_jobs_dead_lettered_total`: jobs sent to the dead-letter sink, failed or evicted. */
  readonly deadLettered: Metric.Metric.Counter<number>
  /** Counter `keel_pool_jobs_unfinished_total`: jobs interrupted while running or never started. */
  readonly unfinished: Metric.Metric.Counter<number>
}

const logDeadLetter = <A>(failed: FailedJob<A>) =>
  Effect.logWarning(
    `job ${failed.job.id} dead-lettered after ${failed.attempts} attempt(s): ${render(failed.cause)}`
  )

const logHandBack = <A>(jobs: ReadonlyArray<Unfinished<A>>) =>
  Effect.logWarning(
    `${jobs.length} job(s) handed back unfinished: ${jobs.map((item) => `${item.job.id} (${item.reason})`).join(", ")}`
  )

const succeeded = Effect.succeed(true)

const interruptedBy = (cause: Cause.Cause<unknown>) => Cause.isInterruptedOnly(cause) && !Cause.isEmpty(cause)

/** How one attempt ended, as its span's `keel.job.outcome` says it. */
const attemptOutcome = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isSuccess(exit) ? "completed" : interruptedBy(exit.cause) ? "interrupted" : "failed"

/** Dies with `IllegalArgumentException` unless each of `values` is an integer ≥ 1. */
const validate = (what: string, values: Record<string, number>) =>
  Validation.validate(
    `WorkerPool.${what}`,
    Object.entries(values).map(([name, value]) => [name, value, Validation.isIntegerFrom(value, 1), Validation.integerFrom(1)])
  )

/**
 * The options `consume` takes: a pool's, less those of the pool's own queue (`capacity`, `strategy`,
 * `onShutdown`). `workers` and `handler` are required.
 *
 * @typeParam A - The payload's type.
 * @typeParam E - The handler's typed failures.
 * @typeParam R - The services the handler needs, required by `consume` in turn.
 */
export type ConsumeOptions<A, E, R> = Omit<Options<A, E, R>, "capacity" | "strategy" | "onShutdown">

/**
 * Workers consuming a shared queue, as `consume` returns them.
 *
 * @typeParam A - The payload's type.
 */
export interface Consumer<A> {
  /** For a consumer, `depth`, `capacity` and `waitingProducers` are 0: the shared queue has its own `depth`. */
  readonly stats: Effect.Effect<Stats>
  /**
   * Stops taking, lets in-flight jobs finish within the deadline and releases the rest; the same result for
   * every caller.
   */
  readonly shutdown: Effect.Effect<DrainResult<A>>
}

/**
 * What both kinds of pool share: the workers' bookkeeping, attempts with timeout and retry, the one place an
 * outcome is decided (`settle`), the deadline and the drain report.
 */
/** How workers resume on the live Clock: in the event loop's check phase, after its turn's I/O (see `startWorker`). */
const checkPhaseScheduler = Scheduler.make((task) => void setImmediate(task))

const makeCore = <A, E, R>(options: ConsumeOptions<A, E, R>, lifecycle: Lifecycle["Type"]) => {
  const name = options.name ?? "worker-pool"
  const attemptTimeout = options.timeout === undefined ? undefined : Duration.decode(options.timeout)
  const deadLetterSink = options.deadLetter ?? logDeadLetter
  const handBackSink = options.handBack ?? logHandBack
  const tags = MetricSeries.series("pool", name).labels
  // Every series exists from the start, so a scrape shows 0 rather than nothing.
  for (const metric of Object.values(poolMetrics)) metric.unsafeUpdate(0, tags)

  // `accepted` includes offers still suspended on a full queue (`suspendedOffers`), so that `awaitIdle`
  // also waits for them.
  const count = {
    accepted: 0,
    suspendedOffers: 0,
    settled: 0,
    completed: 0,
    failed: 0,
    retried: 0,
    deadLettered: 0,
    unfinished: 0
  }
  const running = new Map<number, Job<A>>()
  const unfinishedSinceDrain: Array<Unfinished<A>> = []
  const state = { draining: false }
  const idleWaiters = Waiters.make()
  const isIdle = () => count.settled === count.accepted

  // Succeeds with false when a sink or `onOutcome` failed (logged): a consumer then does not settle the lease.
  const settle = (outcome: Outcome<A>): Effect.Effect<boolean> => {
    count.settled++
    let sink: Effect.Effect<void> = Effect.void
    switch (outcome._tag) {
      case "Completed":
        count.completed++
        poolMetrics.completed.unsafeUpdate(1, tags)
        break
      case "Failed":
        if (!Cause.isFailType(outcome.failure.cause) || !(outcome.failure.cause.error instanceof Evicted)) {
          count.failed++
          poolMetrics.failed.unsafeUpdate(1, tags)
        }
        count.deadLettered++
        poolMetrics.deadLettered.unsafeUpdate(1, tags)
        sink = deadLetterSink(outcome.failure)
        break
      case "Unfinished":
        count.unfinished++
        poolMetrics.unfinished.unsafeUpdate(1, tags)
        if (state.draining) unfinishedSinceDrain.push(outcome.unfinished)
        else sink = handBackSink([outcome.unfinished])
        break
    }
    if (isIdle()) idleWaiters.wake()
    const observed = options.onOutcome === undefined ? sink : Effect.zipRight(sink, options.onOutcome(outcome))
    return observed === Effect.void ? succeeded : Effect.matchCauseEffect(observed, {
      onSuccess: () => succeeded,
      onFailure: (cause) => Effect.as(Effect.logError("WorkerPool: an outcome sink failed", cause), false)
    })
  }

  // Calls the handler; a handler that throws instead of returning an Effect fails its job with a defect.
  const callHandler = (job: Job<A>, attempt: number, delivery: number): Effect.Effect<unknown, E, R> => {
    try {
      return options.handler(job.payload, { id: job.id, attempt, delivery })
    } catch (thrown) {
      return Effect.die(thrown)
    }
  }

  // The attempt runs in a fiber of its own and races a timer only if it suspends (see callTimeout): Effect's
  // timeoutFail forked twice and armed a timer for every attempt, ten times the cost of a no-op job.
  const withTimeout = attemptTimeout === undefined
    ? undefined
    : failAfter(attemptTimeout, () => new Timeout({ after: attemptTimeout }))
  const attemptOf = (job: Job<A>, attempt: number, delivery: number) =>
    withTimeout === undefined ? callHandler(job, attempt, delivery) : withTimeout(callHandler(job, attempt, delivery))

  // With tracing on, each attempt is a consumer span `process <pool>` that continues the trace the job was
  // submitted in (and links to that span), else starts one of its own; with tracing off, nothing is made.
  const processSpan = `process ${name}`
  const runAttempt = (job: Job<A>, attempt: number, delivery: number): Effect.Effect<unknown, E | Timeout, R> =>
    Effect.withFiberRuntime((fiber) => {
      if (!isTracing(fiber)) return attemptOf(job, attempt, delivery)
      const submittedIn = Propagation.parentSpan(job.carried)
      return Effect.withSpan(
        Effect.onExit(attemptOf(job, attempt, delivery), (exit) =>
          Effect.annotateCurrentSpan("keel.job.outcome", attemptOutcome(exit))),
        processSpan,
        {
          kind: "consumer",
          ...(submittedIn === undefined ? { root: true } : { parent: submittedIn, links: [{ _tag: "SpanLink", span: submittedIn, attributes: {} }] }),
          attributes: {
            "messaging.system": "keel",
            "messaging.operation.type": "process",
            "messaging.destination.name": name,
            "messaging.message.id": job.id,
            "keel.job.attempt": attempt,
            "keel.job.delivery": delivery
          }
        }
      )
    })

  // Attempts of the job each worker slot is running (read when the job settles).
  const attemptsBySlot = new Array<number>(options.workers).fill(0)

  /**
   * A job's attempts, within its deadline when it carries one: not started once the deadline has passed, and
   * interrupted when it runs out, both ending the job with `DeadlineExceeded` (never retried: the deadline
   * covers the retries too). Within, the deadline is the calls' own, so middleware the handler uses see it.
   */
  const runAttempts = (job: Job<A>, slot: number, delivery: number): Effect.Effect<unknown, unknown, R> => {
    const deadline = job.carried?.deadline
    if (deadline === undefined) return attemptsWithin(job, slot, delivery)
    return Effect.clockWith((clock) => {
      const left = deadline - clock.unsafeCurrentTimeMillis()
      if (left <= 0) {
        attemptsBySlot[slot] = 0
        return Effect.fail(new DeadlineExceeded({ id: job.id, when: "before-start", late: Duration.millis(-left) }))
      }
      const exceeded = () =>
        new DeadlineExceeded({
          id: job.id,
          when: "while-running",
          late: Duration.millis(Math.max(0, clock.unsafeCurrentTimeMillis() - deadline))
        })
      return failAfter(Duration.millis(left), exceeded)(
        Effect.locally(attemptsWithin(job, slot, delivery), currentDeadline, Option.some(deadline))
      )
    })
  }

  const attemptsWithin = (job: Job<A>, slot: number, delivery: number): Effect.Effect<unknown, unknown, R> => {
    attemptsBySlot[slot] = 1
    const retry = options.retry
    if (retry === undefined) return runAttempt(job, 1, delivery)
    attemptsBySlot[slot] = 0
    const attempt = Effect.suspend(() => {
      const attempts = ++attemptsBySlot[slot]!
      if (attempts > 1) {
        count.retried++
        poolMetrics.retried.unsafeUpdate(1, tags)
      }
      return runAttempt(job, attempts, delivery)
    })
    return retryAfterFailure(attempt, retry)
  }

  const outcomeOf = (
    job: Job<A>,
    exit: Exit.Exit<unknown, unknown>,
    slot: number,
    interruption: Unfinished<A>["reason"] = "interrupted"
  ): Outcome<A> => {
    const attempts = attemptsBySlot[slot]!
    return Exit.isSuccess(exit)
      ? { _tag: "Completed", job, attempts, result: exit.value }
      : interruptedBy(exit.cause)
      ? { _tag: "Unfinished", unfinished: { job, reason: interruption, attempts } }
      : { _tag: "Failed", failure: { job, cause: exit.cause, attempts } }
  }

  const markRunning = (slot: number, job: Job<A> | undefined) => {
    if (job === undefined) running.delete(slot)
    else running.set(slot, job)
    poolMetrics.inFlight.unsafeUpdate(running.size, tags)
  }

  // The Lifecycle's deadline while it drains; otherwise (the pool closed on its own, or after the run
  // ended) a deadline of the same length from now.
  const deadline = Effect.flatMap(lifecycle.phase, (phase) =>
    phase === "draining"
      ? Effect.asVoid(lifecycle.awaitForced)
      : Effect.raceFirst(Effect.asVoid(lifecycle.awaitForced), Effect.sleep(lifecycle.drainTimeout)))

  /** Runs `drain` once, when the Scope closes or the Lifecycle starts draining, whichever comes first. */
  const drainOnce = (
    closeIntake: (reason: string) => Effect.Effect<void>,
    body: Effect.Effect<void>
  ): Effect.Effect<Effect.Effect<DrainResult<A>>, never, Scope.Scope> =>
    Effect.gen(function*() {
      const drain = Effect.gen(function*() {
        yield* closeIntake(`worker pool ${name} is shutting down`)
        state.draining = true
        const startedAt = yield* Clock.currentTimeMillis
        const settledAtStart = count.settled
        yield* body
        const unfinished = [...unfinishedSinceDrain]
        const durationMs = (yield* Clock.currentTimeMillis) - startedAt
        const finished = count.settled - settledAtStart - unfinished.length
        if (unfinished.length > 0) {
          yield* handBackSink(unfinished).pipe(
            Effect.catchAllCause((cause) => Effect.logError("WorkerPool: the hand-back sink failed", cause))
          )
        }
        yield* lifecycle.reportDrain({
          component: name,
          durationMs,
          finished,
          forced: unfinished.filter((item) => item.reason !== "handedBack").length,
          unfinished: unfinished.map((item) => item.job.id)
        })
        return { durationMs, finished, unfinished }
      })
      // The drain starts once, in a fiber of its own: a caller interrupted while waiting cannot cut it short.
      const runtime = yield* Effect.runtime<never>()
      let drainFiber: Fiber.RuntimeFiber<DrainResult<A>> | undefined
      const shutdown = Effect.suspend(() => Fiber.join(drainFiber ??= Runtime.runFork(runtime)(drain)))
      yield* Effect.addFinalizer(() => shutdown)
      // The pool reacts to the Lifecycle's one signal: intake closes and the drain starts at once.
      yield* lifecycle.awaitDraining.pipe(
        Effect.flatMap((trigger) => closeIntake(`draining (${describeTrigger(trigger)})`)),
        Effect.zipRight(shutdown),
        Effect.forkScoped
      )
      return shutdown
    })

  /**
   * Starts a worker in the Scope, named for logs and for the shutdown report's list of what is alive. On
   * the live Clock it resumes in the event loop's check phase (`setImmediate`) rather than in a microtask:
   * jobs submitted within one turn of the loop (the requests of one read from the network) are then taken
   * one after another without a wake-up each, and a busy pool leaves the network its turn. Under TestClock
   * it keeps Effect's scheduler, so that tests drive it with yields and virtual time as any other fiber.
   */
  const startWorker = (slot: number, worker: (slot: number) => Effect.Effect<void, never, R>) =>
    Effect.clockWith((clock) =>
      Effect.forkScoped(Effect.annotateLogs(
        LiveClock.isLive(clock) ? Effect.withScheduler(worker(slot), checkPhaseScheduler) : worker(slot),
        { pool: name, worker: String(slot + 1) }
      ))
    )

  const startWorkers = (worker: (slot: number) => Effect.Effect<void, never, R>) =>
    Effect.forEach(Array.from({ length: options.workers }, (_, slot) => slot), (slot) => startWorker(slot, worker))

  const stats = (queue: { depth: number; capacity: number; waitingProducers: number; accepting: boolean }): Stats => ({
    name,
    workers: options.workers,
    ...queue,
    inFlight: running.size,
    accepted: count.accepted - count.suspendedOffers,
    completed: count.completed,
    failed: count.failed,
    retried: count.retried,
    deadLettered: count.deadLettered,
    unfinished: count.unfinished
  })

  return {
    name,
    tags,
    count,
    isIdle,
    awaitIdle: idleWaiters.until(isIdle),
    settle,
    runAttempts,
    outcomeOf,
    markRunning,
    deadline,
    drainOnce,
    startWorker,
    startWorkers,
    stats
  }
}

/**
 * Starts a pool in the current Scope: `workers` fibers taking jobs from a queue of `capacity`. Requires
 * `Lifecycle`: its draining closes intake and starts the drain, and its deadline bounds the drain, which also
 * runs when the Scope closes. The pool is ready when `make` returns. Dies if `capacity` or `workers` is not a
 * positive integer.
 *
 * @typeParam A - The payload's type, usually inferred from `handler`.
 * @typeParam E - The handler's typed failures.
 * @typeParam R - The services the handler needs.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle, WorkerPool } from "keel"
 *
 * const program = Effect.gen(function*() {
 *   const pool = yield* WorkerPool.make({
 *     name: "emails",
 *     capacity: 100,
 *     workers: 4,
 *     timeout: "10 seconds",
 *     handler: (to: string) => Effect.log(`sending to ${to}`)
 *   })
 *   const id = yield* pool.submit("ada@example.com")
 *   yield* pool.awaitIdle
 *   yield* Effect.log(`job ${id} done`)
 * }).pipe(Effect.scoped, Effect.provide(Lifecycle.layer()))
 * ```
 */
export const make = <A, E = never, R = never>(
  options: Options<A, E, R>
): Effect.Effect<WorkerPool<A>, never, Scope.Scope | Lifecycle | R> =>
  Effect.gen(function*() {
    yield* validate("make", { capacity: options.capacity, workers: options.workers })
    const lifecycle = yield* Lifecycle
    const clock = yield* Effect.clock
    const core = makeCore(options, lifecycle)
    const { count, name, settle, tags } = core
    const capacity = options.capacity
    const strategy = options.strategy ?? "suspend"
    const policy = options.onShutdown ?? "drain"
    const queue = yield* Queue.bounded<Job<A>>(capacity)
    let closedReason: string | undefined
    let sequence = 0

    const depth = () => Math.max(0, Math.min(capacity, Option.getOrElse(queue.unsafeSize(), () => 0)))
    // Called after every step that changes `depth`: an offer (after an eviction too), a take (which may admit a
    // suspended offer), the drain's takeAll.
    const recordDepth = () => poolMetrics.depth.unsafeUpdate(depth(), tags)

    const newJob = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      payload: A,
      submitOptions: SubmitOptions | undefined
    ): Job<A> => {
      const id = submitOptions?.id ?? `${name}-${++sequence}`
      const enqueuedAt = clock.unsafeCurrentTimeMillis()
      const carried = Propagation.captureFrom(fiber, submitOptions?.deadline)
      return carried === undefined ? { id, payload, enqueuedAt } : { id, payload, enqueuedAt, carried }
    }

    const refuse = () => Effect.fail(new ShuttingDown({ reason: closedReason! }))

    // Counted as accepted before the offer, so `awaitIdle` never sees a job between queue and worker.
    const offerNow = (job: Job<A>): boolean => {
      count.accepted++
      if (queue.unsafeOffer(job)) {
        recordDepth()
        return true
      }
      count.accepted--
      return false
    }

    const trySubmit = (payload: A, submitOptions?: SubmitOptions) =>
      Effect.withFiberRuntime((fiber): Effect.Effect<string, ShuttingDown | QueueFull> => {
        if (closedReason !== undefined) return refuse()
        const job = newJob(fiber, payload, submitOptions)
        return offerNow(job) ? Effect.succeed(job.id) : Effect.fail(new QueueFull({ capacity }))
      })

    const submitSuspending = (payload: A, submitOptions?: SubmitOptions) =>
      Effect.withFiberRuntime((fiber): Effect.Effect<string, ShuttingDown> => {
        if (closedReason !== undefined) return refuse()
        const job = newJob(fiber, payload, submitOptions)
        if (offerNow(job)) return Effect.succeed(job.id)
        count.accepted++
        count.suspendedOffers++
        return Queue.offer(queue, job).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              count.suspendedOffers--
              if (Exit.isFailure(exit)) count.accepted--
            })
          ),
          Effect.as(job.id)
        )
      })

    const evictOldestThenOffer = (job: Job<A>): Effect.Effect<void> =>
      Effect.suspend(() =>
        offerNow(job) ? Effect.void : Effect.flatMap(Queue.poll(queue), (oldest) =>
          Option.isNone(oldest) ? evictOldestThenOffer(job) : settle({
            _tag: "Failed",
            failure: { job: oldest.value, cause: Cause.fail(new Evicted({ capacity })), attempts: 0 }
          }).pipe(Effect.zipRight(evictOldestThenOffer(job))))
      )

    const submitEvicting = (payload: A, submitOptions?: SubmitOptions) =>
      Effect.withFiberRuntime((fiber): Effect.Effect<string, ShuttingDown> => {
        if (closedReason !== undefined) return refuse()
        const job = newJob(fiber, payload, submitOptions)
        return Effect.as(evictOldestThenOffer(job), job.id)
      })

    // A worker runs uninterruptibly except while it waits in `take` or runs a job, so a job taken is always
    // registered as running, and a job's exit is always settled. It loops without yielding between jobs
    // (`Effect.forever` would yield after each); the runtime still yields every 2048 operations.
    const takeJob = Effect.interruptible(Queue.take(queue))
    const worker = (slot: number) => {
      const finish = (job: Job<A>, exit: Exit.Exit<unknown, unknown>) => {
        core.markRunning(slot, undefined)
        return settle(core.outcomeOf(job, exit, slot))
      }
      const runNext = Effect.flatMap(takeJob, (job) => {
        recordDepth()
        core.markRunning(slot, job)
        return Effect.matchCauseEffect(Effect.interruptible(core.runAttempts(job, slot, 1)), {
          onSuccess: (result) => finish(job, Exit.succeed(result)),
          onFailure: (cause) => finish(job, Exit.failCause(cause))
        })
      })
      const loop: Effect.Effect<never, never, R> = Effect.flatMap(runNext, () => loop)
      return Effect.uninterruptible(loop)
    }

    const workerFibers = yield* core.startWorkers(worker)
    // Let the workers reach `take`, so the pool is ready (and its first job is taken) when `make` returns.
    yield* Effect.yieldNow()

    const closeIntake = (reason: string) => Effect.sync(() => void (closedReason ??= reason))

    // Takes every queued job (moving suspended producers' jobs in as room appears) and settles it unfinished.
    const takeAllQueued = (reason: Unfinished<A>["reason"]): Effect.Effect<void> =>
      Effect.flatMap(Effect.zipLeft(Queue.takeAll(queue), Effect.sync(recordDepth)), (jobs) =>
        jobs.length === 0 ? Effect.void : Effect.forEach(jobs, (job) =>
          settle({ _tag: "Unfinished", unfinished: { job, reason, attempts: 0 } }), { discard: true }).pipe(
            Effect.zipRight(takeAllQueued(reason))
          ))

    const shutdown = yield* core.drainOnce(
      closeIntake,
      Effect.gen(function*() {
        if (policy === "handBack") yield* takeAllQueued("handedBack")
        yield* Effect.raceFirst(core.awaitIdle, core.deadline)
        // Idle workers wait in `take`; after the deadline this also interrupts running jobs, which settle as
        // unfinished.
        yield* Fiber.interruptAll(workerFibers)
        yield* takeAllQueued(policy === "handBack" ? "handedBack" : "notStarted")
        yield* Queue.shutdown(queue)
      })
    )

    const pool: WorkerPool<A> = {
      submit: strategy === "suspend" ? submitSuspending : strategy === "dropNewest" ? trySubmit : submitEvicting,
      trySubmit,
      awaitIdle: core.awaitIdle,
      shutdown,
      stats: Effect.sync(() =>
        core.stats({
          capacity,
          depth: depth(),
          waitingProducers: Math.max(0, Option.getOrElse(queue.unsafeSize(), () => 0) - capacity),
          accepting: closedReason === undefined
        })
      )
    }
    return pool
  })

/** How long a worker waits before taking again after the source failed to deliver. */
const takeRetryPause = Duration.seconds(1)

/**
 * Starts workers consuming a shared queue in the current Scope: each takes a lease, runs the handler (with
 * timeout and retry as in `make`) while renewing the lease, then acks it, or dead-letters it with the rendered
 * Cause; an interrupted job's lease is released, a job whose lease is lost is interrupted. Outcomes, sinks,
 * metrics and the drain report are those of `make`. Requires `Lifecycle`: draining stops the taking, and its
 * deadline bounds the wait for in-flight jobs, after which they are interrupted and released. A source that
 * fails to deliver (the backend is unreachable) is logged and tried again every second until the drain.
 * Dies if `workers` is not a positive integer.
 *
 * @typeParam A - The payload's type, as the source holds it.
 * @typeParam E - The handler's typed failures.
 * @typeParam R - The services the handler needs.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Lifecycle, WorkerPool } from "keel"
 * import { MemoryJobQueue } from "keel/memory"
 * import { JobQueue } from "keel/services"
 *
 * const runner = Effect.gen(function*() {
 *   const queue = yield* JobQueue.JobQueue
 *   yield* WorkerPool.consume(queue, { workers: 4, handler: (payload) => Effect.log("running", payload) })
 *   yield* Lifecycle.awaitDraining // consume until the service drains
 * })
 * const queueLayer = MemoryJobQueue.layer({ capacity: 100, leaseDuration: "30 seconds", maxDeliveries: 3 })
 * const program = runner.pipe(Effect.scoped, Effect.provide(Layer.merge(queueLayer, Lifecycle.layer())))
 * ```
 */
export const consume = <A, E = never, R = never>(
  source: Source<A>,
  options: ConsumeOptions<A, E, R>
): Effect.Effect<Consumer<A>, never, Scope.Scope | Lifecycle | R> =>
  Effect.gen(function*() {
    yield* validate("consume", { workers: options.workers })
    const lifecycle = yield* Lifecycle
    const core = makeCore(options, lifecycle)
    const { count, settle } = core
    let taking = true
    const renewEvery = Duration.millis(Math.max(1, Duration.toMillis(source.leaseDuration) / 3))
    // Slots waiting in `take` (the drain interrupts them), and the leases of the jobs running in each slot.
    const waiting = new Set<number>()
    const leases = new Map<number, LeasedJob<A>>()

    const takeOrRetry: Effect.Effect<LeasedJob<A>> = Effect.catchAllCause(
      source.acquire,
      (cause) =>
        Effect.logWarning("WorkerPool: taking a job failed; trying again", cause).pipe(
          Effect.zipRight(Effect.sleep(takeRetryPause)),
          Effect.zipRight(Effect.suspend(() => takeOrRetry))
        )
    )

    // One fiber renews the leases of all running jobs every third of the lease duration. A renewal that fails
    // while its job still runs is logged; a lost lease is reported by the lease itself.
    const renewOne = (lease: LeasedJob<A>) =>
      Effect.catchAllCause(source.renew(lease), (cause) =>
        Effect.suspend(() =>
          [...leases.values()].includes(lease)
            ? Effect.logWarning(`WorkerPool: renewing the lease of job ${lease.id} failed`, cause)
            : Effect.void
        ))
    const renewAll = Effect.suspend(() =>
      Effect.forEach([...leases.values()], renewOne, { concurrency: "unbounded", discard: true })
    )
    yield* Effect.forkScoped(Effect.interruptible(Effect.forever(Effect.zipRight(Effect.sleep(renewEvery), renewAll))))

    // The queue's side of an outcome: ack, dead-letter, or release (an unfinished job, or one whose outcome
    // could not be recorded, is ready again at once). A lease the queue could not settle is released too, so
    // that the job runs again as soon as the queue answers rather than when the lease expires.
    const settleLease = (lease: LeasedJob<A>, outcome: Outcome<A> | undefined): Effect.Effect<void> => {
      const settled = outcome?._tag === "Completed"
        ? source.ack(lease)
        : outcome?._tag === "Failed"
        ? source.deadLetter(lease, render(outcome.failure.cause))
        : undefined
      if (settled === undefined) return source.release(lease)
      return Effect.catchAllCause(settled, (cause) =>
        Effect.zipRight(
          Effect.logWarning(`WorkerPool: settling job ${lease.id} with the queue failed`, cause),
          source.release(lease)
        ))
    }

    // As in `make`, a worker is uninterruptible except while it takes or runs a job, so every lease it acquires
    // is settled or released by the steps below, whatever the job does. A job runs in its worker's
    // fiber (a fiber per job would cost more than all the rest of its bookkeeping), and a lost lease interrupts
    // that fiber from the lease's listener, but only while the job runs. Such a fiber may stay marked
    // interrupted after the job, which would cut its next take short, so it settles the job and then leaves,
    // a fresh fiber taking its slot.
    const noLease = Effect.succeed(undefined)
    const notMore = Effect.succeed(false)
    const worker = (slot: number): Effect.Effect<void, never, R> => {
      let interruptedForLoss = false
      const run = (lease: LeasedJob<A>) =>
        Effect.withFiberRuntime<void, never, R>((fiber) => {
          count.accepted++
          core.markRunning(slot, lease)
          leases.set(slot, lease)
          let running = true
          let lost = false
          const stopListening = lease.onLost(() => {
            lost = true
            if (!running) return
            interruptedForLoss = true
            fiber.unsafeInterruptAsFork(fiber.id())
          })
          // The outcome is observed (sinks, `onOutcome`) before the queue hears of it, the lease still renewed
          // meanwhile: a process dying in between leaves the job to be run again, never acked and unrecorded.
          const finish = (exit: Exit.Exit<unknown, unknown>) => {
            running = false
            stopListening()
            core.markRunning(slot, undefined)
            const outcome = core.outcomeOf(lease, exit, slot, lost ? "leaseLost" : "interrupted")
            // (Neither step fails, and the worker is uninterruptible here: the lease leaves `leases` after them.)
            return settle(outcome).pipe(
              // An outcome that could not be recorded is not reported to the queue either: the lease is released,
              // and the job runs again.
              Effect.flatMap((recorded) => settleLease(lease, recorded ? outcome : undefined)),
              Effect.zipRight(Effect.sync(() => void leases.delete(slot)))
            )
          }
          return Effect.matchCauseEffect(Effect.interruptible(core.runAttempts(lease, slot, lease.delivery)), {
            onSuccess: (result) => finish(Exit.succeed(result)),
            onFailure: (cause) => finish(Exit.failCause(cause))
          })
        })
      // The worker is uninterruptible around its take, so the slot leaves `waiting` however the take ends.
      const takeNext = Effect.suspend(() => {
        if (!taking) return noLease
        waiting.add(slot)
        return Effect.matchCauseEffect(Effect.interruptible(takeOrRetry), {
          onFailure: (cause) => Effect.zipRight(Effect.sync(() => waiting.delete(slot)), Effect.failCause(cause)),
          onSuccess: (lease) => {
            waiting.delete(slot)
            return Effect.succeed(lease)
          }
        })
      })
      // A job taken just as the drain began is not started: it is released.
      const runNext = Effect.flatMap(takeNext, (lease) =>
        lease === undefined ? notMore : !taking ? Effect.as(source.release(lease), false) : Effect.as(run(lease), true))
      const loop: Effect.Effect<void, never, R> = Effect.flatMap(runNext, (more) =>
        !more ? Effect.void : interruptedForLoss ? replace(slot) : loop)
      return Effect.uninterruptible(loop)
    }

    // The consumer's workers, by slot: a worker that leaves after a lost lease is replaced in its slot.
    const scope = yield* Effect.scope
    const replace = (slot: number): Effect.Effect<void, never, R> =>
      core.startWorker(slot, worker).pipe(
        Effect.tap((fiber) => Effect.sync(() => void (workerFibers[slot] = fiber))),
        Effect.provideService(Scope.Scope, scope),
        Effect.asVoid
      )
    const workerFibers = yield* core.startWorkers(worker)

    // Stops the taking: workers waiting in `take` are interrupted, the others leave after their job.
    const closeIntake = () =>
      Effect.suspend(() => {
        taking = false
        return Effect.forEach([...waiting], (slot) => Fiber.interruptFork(workerFibers[slot]!), { discard: true })
      })

    const shutdown = yield* core.drainOnce(
      closeIntake,
      Effect.gen(function*() {
        // Workers leave once their job is settled; at the deadline the rest are interrupted (leases released).
        yield* Effect.raceFirst(Fiber.awaitAll(workerFibers), core.deadline)
        yield* Fiber.interruptAll(workerFibers)
      })
    )

    const consumer: Consumer<A> = {
      shutdown,
      stats: Effect.sync(() => core.stats({ capacity: 0, depth: 0, waitingProducers: 0, accepting: taking }))
    }
    return consumer
  })
