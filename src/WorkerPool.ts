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
 */
import { Cause, Clock, Duration, Effect, Exit, Fiber, Metric, MetricLabel, Option, Queue, Runtime } from "effect"
import type { Schedule, Scope } from "effect"
import { Evicted, QueueFull, render, ShuttingDown, Timeout } from "./Errors.js"
import { describeTrigger, Lifecycle } from "./Lifecycle.js"
import * as Waiters from "./Waiters.js"

/** How a full queue treats a new job: wait for room, refuse the new job, or evict the oldest queued one. */
export type Strategy = "suspend" | "dropNewest" | "dropOldest"

/** What a drain does with jobs still queued: run them (`drain`) or return them unstarted (`handBack`). */
export type ShutdownPolicy = "drain" | "handBack"

export interface Job<A> {
  readonly id: string
  readonly payload: A
  /** Clock time (ms) when the job was accepted. */
  readonly enqueuedAt: number
}

/** What a handler knows about the job it runs. */
export interface JobContext {
  readonly id: string
  /** 1 on the first run, 2 on the first retry, … */
  readonly attempt: number
}

export interface DeadLetter<A> {
  readonly job: Job<A>
  readonly cause: Cause.Cause<unknown>
  readonly attempts: number
}

export interface Unfinished<A> {
  readonly job: Job<A>
  /**
   * `interrupted`: it was running when waiting stopped; `notStarted`: still queued when the deadline came;
   * `handedBack`: returned unstarted by the `handBack` policy.
   */
  readonly reason: "interrupted" | "notStarted" | "handedBack"
  readonly attempts: number
}

export type Outcome<A> =
  | { readonly _tag: "Completed"; readonly job: Job<A>; readonly attempts: number; readonly result: unknown }
  | { readonly _tag: "Failed"; readonly letter: DeadLetter<A> }
  | { readonly _tag: "Unfinished"; readonly unfinished: Unfinished<A> }

export interface Options<A, E, R> {
  /** Names the pool in metrics, ids and the shutdown report. Default `worker-pool`. */
  readonly name?: string
  /** Queue capacity: at most this many accepted jobs wait. */
  readonly capacity: number
  /** Number of worker fibers, i.e. jobs running at once. */
  readonly workers: number
  readonly handler: (payload: A, job: JobContext) => Effect.Effect<unknown, E, R>
  readonly strategy?: Strategy
  /** Limit for one attempt; past it the attempt fails with `Timeout { after }` and is interrupted. */
  readonly timeout?: Duration.DurationInput
  /** Retries failed attempts (typed failures and timeouts, never defects) on this schedule. */
  readonly retry?: Schedule.Schedule<unknown, E | Timeout>
  readonly onShutdown?: ShutdownPolicy
  /**
   * Receives every failed or evicted job. Default: a warning log with the rendered cause. Sinks run in the
   * worker, which waits for them: keep them short (hand slow storage to a queue of its own).
   */
  readonly deadLetter?: (letter: DeadLetter<A>) => Effect.Effect<void>
  /** Receives the jobs a drain did not finish, once, at its end. Default: a warning log listing them. */
  readonly handBack?: (jobs: ReadonlyArray<Unfinished<A>>) => Effect.Effect<void>
  /** Observes every outcome as it is decided. */
  readonly onOutcome?: (outcome: Outcome<A>) => Effect.Effect<void>
}

export interface Stats {
  readonly name: string
  readonly capacity: number
  readonly workers: number
  readonly accepting: boolean
  /** Jobs waiting in the queue (never more than capacity). */
  readonly depth: number
  /** Producers suspended in `submit` because the queue is full. */
  readonly waitingProducers: number
  readonly inFlight: number
  readonly accepted: number
  readonly completed: number
  /** Jobs whose last attempt failed (typed failure, timeout or defect). */
  readonly failed: number
  /** Attempts run again after a failure. */
  readonly retried: number
  /** Failed jobs plus evicted ones. */
  readonly deadLettered: number
  readonly unfinished: number
}

export interface DrainResult<A> {
  readonly durationMs: number
  /** Jobs that completed or failed while the drain ran. */
  readonly finished: number
  readonly unfinished: ReadonlyArray<Unfinished<A>>
}

export interface WorkerPool<A> {
  /** Accepts a job, suspending while the queue is full (with `dropNewest`/`dropOldest`, never suspends). */
  readonly submit: (payload: A, options?: SubmitOptions) => Effect.Effect<string, ShuttingDown | QueueFull>
  /** Accepts a job only if there is room now; otherwise fails with `QueueFull`. */
  readonly trySubmit: (payload: A, options?: SubmitOptions) => Effect.Effect<string, ShuttingDown | QueueFull>
  readonly stats: Effect.Effect<Stats>
  /** Completes when every accepted job has an outcome. */
  readonly awaitIdle: Effect.Effect<void>
  /** Closes intake and drains per policy within the deadline; the same result for every caller. */
  readonly shutdown: Effect.Effect<DrainResult<A>>
}

export interface SubmitOptions {
  /** Caller-chosen id; default `<pool name>-<sequence>`. */
  readonly id?: string
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

/** The metrics of the pool named `pool` (tagged `pool=<name>`), to read them or to export them. */
export const metrics = (pool: string) => ({
  depth: Metric.tagged(poolMetrics.depth, "pool", pool),
  inFlight: Metric.tagged(poolMetrics.inFlight, "pool", pool),
  completed: Metric.tagged(poolMetrics.completed, "pool", pool),
  failed: Metric.tagged(poolMetrics.failed, "pool", pool),
  retried: Metric.tagged(poolMetrics.retried, "pool", pool),
  deadLettered: Metric.tagged(poolMetrics.deadLettered, "pool", pool),
  unfinished: Metric.tagged(poolMetrics.unfinished, "pool", pool)
})

const logDeadLetter = <A>(letter: DeadLetter<A>) =>
  Effect.logWarning(
    `job ${letter.job.id} dead-lettered after ${letter.attempts} attempt(s): ${render(letter.cause)}`
  )

const logHandBack = <A>(jobs: ReadonlyArray<Unfinished<A>>) =>
  Effect.logWarning(
    `${jobs.length} job(s) handed back unfinished: ${jobs.map((item) => `${item.job.id} (${item.reason})`).join(", ")}`
  )

const interruptedBy = (cause: Cause.Cause<unknown>) => Cause.isInterruptedOnly(cause) && !Cause.isEmpty(cause)

const validate = <A, E, R>(options: Options<A, E, R>) =>
  Number.isInteger(options.capacity) && options.capacity >= 1 && Number.isInteger(options.workers) &&
    options.workers >= 1
    ? Effect.void
    : Effect.dieMessage(
      `WorkerPool: capacity and workers must be positive integers (got ${options.capacity}, ${options.workers})`
    )

/**
 * Starts a pool in the current Scope. Requires `Lifecycle`: its draining closes intake, and its deadline
 * bounds the drain that runs when the Scope closes.
 */
export const make = <A, E = never, R = never>(
  options: Options<A, E, R>
): Effect.Effect<WorkerPool<A>, never, Scope.Scope | Lifecycle | R> =>
  Effect.gen(function*() {
    yield* validate(options)
    const lifecycle = yield* Lifecycle
    const clock = yield* Effect.clock
    const name = options.name ?? "worker-pool"
    const capacity = options.capacity
    const strategy = options.strategy ?? "suspend"
    const policy = options.onShutdown ?? "drain"
    const attemptTimeout = options.timeout === undefined ? undefined : Duration.decode(options.timeout)
    const deadLetterSink = options.deadLetter ?? logDeadLetter
    const handBackSink = options.handBack ?? logHandBack
    // One tags array for every update: the metric registry caches its key by this array's identity.
    const tags = [MetricLabel.make("pool", name)]
    // Every series exists from the start, so a scrape shows 0 rather than nothing.
    for (const metric of Object.values(poolMetrics)) metric.unsafeUpdate(0, tags)
    const queue = yield* Queue.bounded<Job<A>>(capacity)

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
    let closedReason: string | undefined
    let draining = false
    let sequence = 0
    const idleWaiters = Waiters.make()

    const depth = () => Math.max(0, Math.min(capacity, Option.getOrElse(queue.unsafeSize(), () => 0)))
    const isIdle = () => count.settled === count.accepted

    // The one place an outcome is decided: counters, metrics, sinks.
    const settle = (outcome: Outcome<A>): Effect.Effect<void> => {
      count.settled++
      let sink: Effect.Effect<void> = Effect.void
      switch (outcome._tag) {
        case "Completed":
          count.completed++
          poolMetrics.completed.unsafeUpdate(1, tags)
          break
        case "Failed":
          if (!Cause.isFailType(outcome.letter.cause) || !(outcome.letter.cause.error instanceof Evicted)) {
            count.failed++
            poolMetrics.failed.unsafeUpdate(1, tags)
          }
          count.deadLettered++
          poolMetrics.deadLettered.unsafeUpdate(1, tags)
          sink = deadLetterSink(outcome.letter)
          break
        case "Unfinished":
          count.unfinished++
          poolMetrics.unfinished.unsafeUpdate(1, tags)
          if (draining) unfinishedSinceDrain.push(outcome.unfinished)
          else sink = handBackSink([outcome.unfinished])
          break
      }
      if (isIdle()) idleWaiters.wake()
      const observed = options.onOutcome === undefined ? sink : Effect.zipRight(sink, options.onOutcome(outcome))
      return observed === Effect.void ? observed : Effect.catchAllCause(
        observed,
        (cause) => Effect.logError("WorkerPool: an outcome sink failed", cause)
      )
    }

    const newJob = (payload: A, submitOptions: SubmitOptions | undefined): Job<A> => ({
      id: submitOptions?.id ?? `${name}-${++sequence}`,
      payload,
      enqueuedAt: clock.unsafeCurrentTimeMillis()
    })

    const refuse = () => Effect.fail(new ShuttingDown({ reason: closedReason! }))

    // Counted as accepted before the offer, so `awaitIdle` never sees a job between queue and worker.
    const offerNow = (job: Job<A>): boolean => {
      count.accepted++
      if (queue.unsafeOffer(job)) {
        poolMetrics.depth.unsafeUpdate(depth(), tags)
        return true
      }
      count.accepted--
      return false
    }

    const trySubmit = (payload: A, submitOptions?: SubmitOptions) =>
      Effect.suspend((): Effect.Effect<string, ShuttingDown | QueueFull> => {
        if (closedReason !== undefined) return refuse()
        const job = newJob(payload, submitOptions)
        return offerNow(job) ? Effect.succeed(job.id) : Effect.fail(new QueueFull({ capacity }))
      })

    const submitSuspending = (payload: A, submitOptions?: SubmitOptions) =>
      Effect.suspend((): Effect.Effect<string, ShuttingDown> => {
        if (closedReason !== undefined) return refuse()
        const job = newJob(payload, submitOptions)
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
            letter: { job: oldest.value, cause: Cause.fail(new Evicted({ capacity })), attempts: 0 }
          }).pipe(Effect.zipRight(evictOldestThenOffer(job))))
      )

    const submitEvicting = (payload: A, submitOptions?: SubmitOptions) =>
      Effect.suspend((): Effect.Effect<string, ShuttingDown> => {
        if (closedReason !== undefined) return refuse()
        const job = newJob(payload, submitOptions)
        return Effect.as(evictOldestThenOffer(job), job.id)
      })

    // Calls the handler; a handler that throws instead of returning an Effect fails its job with a defect.
    const callHandler = (job: Job<A>, attempt: number): Effect.Effect<unknown, E, R> => {
      try {
        return options.handler(job.payload, { id: job.id, attempt })
      } catch (thrown) {
        return Effect.die(thrown)
      }
    }

    const runAttempt = (job: Job<A>, attempt: number) =>
      attemptTimeout === undefined ? callHandler(job, attempt) : Effect.timeoutFail(callHandler(job, attempt), {
        duration: attemptTimeout,
        onTimeout: () => new Timeout({ after: attemptTimeout })
      })

    // Attempts of the job each worker slot is running (read when the job settles).
    const attemptsBySlot = new Array<number>(options.workers).fill(0)

    const runAttempts = (job: Job<A>, slot: number): Effect.Effect<unknown, unknown, R> => {
      attemptsBySlot[slot] = 1
      const retry = options.retry
      if (retry === undefined) return runAttempt(job, 1)
      attemptsBySlot[slot] = 0
      const attempt = Effect.suspend(() => {
        const attempts = ++attemptsBySlot[slot]!
        if (attempts > 1) {
          count.retried++
          poolMetrics.retried.unsafeUpdate(1, tags)
        }
        return runAttempt(job, attempts)
      })
      return Effect.retry(attempt, retry)
    }

    const outcomeOf = (job: Job<A>, exit: Exit.Exit<unknown, unknown>, attempts: number): Outcome<A> =>
      Exit.isSuccess(exit)
        ? { _tag: "Completed", job, attempts, result: exit.value }
        : interruptedBy(exit.cause)
        ? { _tag: "Unfinished", unfinished: { job, reason: "interrupted", attempts } }
        : { _tag: "Failed", letter: { job, cause: exit.cause, attempts } }

    // A worker runs uninterruptibly except while it waits in `take` or runs a job, so a job taken is always
    // registered as running, and a job's exit is always settled. It loops without yielding between jobs
    // (`Effect.forever` would yield after each); the runtime still yields every 2048 operations.
    const takeJob = Effect.interruptible(Queue.take(queue))
    const worker = (slot: number) => {
      const finish = (job: Job<A>, exit: Exit.Exit<unknown, unknown>) => {
        running.delete(slot)
        poolMetrics.inFlight.unsafeUpdate(running.size, tags)
        poolMetrics.depth.unsafeUpdate(depth(), tags)
        return settle(outcomeOf(job, exit, attemptsBySlot[slot]!))
      }
      const runNext = Effect.flatMap(takeJob, (job) => {
        running.set(slot, job)
        poolMetrics.inFlight.unsafeUpdate(running.size, tags)
        return Effect.matchCauseEffect(Effect.interruptible(runAttempts(job, slot)), {
          onSuccess: (result) => finish(job, Exit.succeed(result)),
          onFailure: (cause) => finish(job, Exit.failCause(cause))
        })
      })
      const loop: Effect.Effect<never, never, R> = Effect.flatMap(runNext, () => loop)
      return Effect.uninterruptible(loop)
    }

    const workerFibers = yield* Effect.forEach(
      Array.from({ length: options.workers }, (_, slot) => slot),
      // Named for logs and for the shutdown report's list of what is still alive.
      (slot) => Effect.forkScoped(Effect.annotateLogs(worker(slot), { pool: name, worker: String(slot + 1) }))
    )
    // Let the workers reach `take`, so the pool is ready (and its first job is taken) when `make` returns.
    yield* Effect.yieldNow()

    const closeIntake = (reason: string) => Effect.sync(() => void (closedReason ??= reason))

    const awaitIdle = idleWaiters.until(isIdle)

    // Takes every queued job (moving suspended producers' jobs in as room appears) and settles it unfinished.
    const takeAllQueued = (reason: Unfinished<A>["reason"]): Effect.Effect<void> =>
      Effect.flatMap(Queue.takeAll(queue), (jobs) =>
        jobs.length === 0 ? Effect.void : Effect.forEach(jobs, (job) =>
          settle({ _tag: "Unfinished", unfinished: { job, reason, attempts: 0 } }), { discard: true }).pipe(
            Effect.zipRight(takeAllQueued(reason))
          ))

    // The Lifecycle's deadline while it drains; otherwise (the pool closed on its own, or after the run
    // ended) a deadline of the same length from now.
    const deadline = Effect.flatMap(lifecycle.phase, (phase) =>
      phase === "draining"
        ? Effect.asVoid(lifecycle.awaitForced)
        : Effect.raceFirst(Effect.asVoid(lifecycle.awaitForced), Effect.sleep(lifecycle.drainTimeout)))

    const drain: Effect.Effect<DrainResult<A>> = Effect.gen(function*() {
      yield* closeIntake(`worker pool ${name} is shutting down`)
      draining = true
      const startedAt = yield* Clock.currentTimeMillis
      const settledAtStart = count.settled
      if (policy === "handBack") yield* takeAllQueued("handedBack")
      yield* Effect.raceFirst(awaitIdle, deadline)
      // Idle workers wait in `take`; after the deadline this also interrupts running jobs, which settle as unfinished.
      yield* Fiber.interruptAll(workerFibers)
      yield* takeAllQueued(policy === "handBack" ? "handedBack" : "notStarted")
      yield* Queue.shutdown(queue)
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

    const pool: WorkerPool<A> = {
      submit: strategy === "suspend" ? submitSuspending : strategy === "dropNewest" ? trySubmit : submitEvicting,
      trySubmit,
      awaitIdle,
      shutdown,
      stats: Effect.sync(() => {
        const size = Option.getOrElse(queue.unsafeSize(), () => 0)
        return {
          name,
          capacity,
          workers: options.workers,
          accepting: closedReason === undefined,
          depth: depth(),
          waitingProducers: Math.max(0, size - capacity),
          inFlight: running.size,
          accepted: count.accepted - count.suspendedOffers,
          completed: count.completed,
          failed: count.failed,
          retried: count.retried,
          deadLettered: count.deadLettered,
          unfinished: count.unfinished
        }
      })
    }
    return pool
  })
