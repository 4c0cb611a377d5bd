/**
 * The queue of jobs that outlive a request: one contract, interchangeable backends (embedded memory, Redis
 * Streams), so the same runner shares work between the workers of one process or of many.
 *
 * Delivery is at least once. A worker `take`s a job as a **lease** bound to its Scope and settles it with
 * `ack`, `nack` (try again, maybe later) or `deadLetter`. A lease that is not settled — its Scope closed
 * (the worker was interrupted or its process drained), or it expired because nobody `renew`ed it within
 * `leaseDuration` (the process died) — goes back to the queue and is delivered again, with `delivery` one
 * higher. So a job can run twice only when its first run lost its lease; a runner interrupts a job whose
 * lease is `lost`, so that two runs never overlap for long. Past `maxDeliveries` deliveries a job is dead-lettered
 * instead of delivered again; dead letters can be listed and requeued.
 *
 * `offer` is idempotent by id: offering an id the queue still holds (ready, delayed, leased or dead) returns
 * it and adds nothing. It suspends while `capacity` jobs are ready or delayed (backpressure); `tryOffer`
 * fails with `QueueFull` instead. Payloads are JSON values, so any backend can store them as they are.
 * Each backend documents what survives what (a process, a restart, a machine). Every backend exports the same
 * metrics (`metrics(name)`): its jobs by state, and the lease events an operator watches for (takeovers of
 * expired leases, failed renewals, dead letters).
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as DurationModule from "effect/Duration"
import type * as Duration from "effect/Duration"
import * as Metric from "effect/Metric"
import * as MetricSeries from "#keel/internal/MetricSeries"
import * as Validation from "#keel/internal/Validation"
import type * as Scope from "effect/Scope"
import * as Effect from "effect/Effect"
import { Propagation, QueueUnavailable, type QueueFull } from "keel"
import { isTracing } from "#keel/internal/tracing"

/** The queue's error for a backend it cannot reach, defined with Keel's other rejections. */
export { QueueUnavailable }

/** A JSON value: what a payload may be. */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/** Options of `offer` and `tryOffer`. */
export interface OfferOptions {
  /**
   * The job's id; offering an id the queue still holds (ready, delayed, leased or dead) adds nothing and
   * returns it. Default: a fresh id made by the backend.
   */
  readonly id?: string
  /** Ready only after this long; meanwhile the job counts as delayed, toward `capacity`. Default: at once. */
  readonly delay?: Duration.DurationInput
  /**
   * The job must have ended within this long from now: a runner does not start it after that (it ends with
   * `DeadlineExceeded`) and stops it when the time runs out. An offer made under a deadline (`Middleware.deadline`)
   * carries that one; the sooner of the two wins. Default: the offerer's deadline, if any.
   */
  readonly deadline?: Duration.DurationInput
}

/** One delivery of a job to one worker. */
export interface Lease {
  /** The job's id: the one given to `offer`, or the one the backend made. */
  readonly id: string
  /** The job's payload as offered (a distributed backend gives back what its JSON text parses to). */
  readonly payload: Json
  /**
   * Which delivery of the job this is, from 1: one more each time the job is taken again (after a `nack`,
   * a release or a lost lease). Not an attempt within one delivery, which is the runner's own count.
   */
  readonly delivery: number
  /** Clock millis when the job was first offered. */
  readonly enqueuedAt: number
  /**
   * What the job carries from its offer: the offering span (when tracing was on) and its deadline. Absent when
   * it was offered outside any span and deadline.
   */
  readonly carried?: Propagation.Carried
  /** Completes if the lease is lost (expired and delivered again): the job should stop at once. */
  readonly lost: Effect.Effect<void>
  /**
   * Calls `listener` once, synchronously, when the lease is lost (at once if it already is); the returned
   * function stops listening. For runners that stop a job without a fiber watching `lost` (WorkerPool.consume).
   */
  readonly onLost: (listener: () => void) => () => void
}

/** Options of `nack`. */
export interface NackOptions {
  /** Delivered again only after this long (delayed meanwhile). Default: at once. Unused when dead-lettered. */
  readonly delay?: Duration.DurationInput
  /**
   * Why this attempt failed, kept as the dead letter's `reason` if this was the last attempt. Default:
   * `failed after <n> deliveries`.
   */
  readonly error?: string
}

/**
 * A job the queue gave up on, as `deadLetters` lists it: dead-lettered by `deadLetter`, by `nack` on its
 * `maxDeliveries`-th delivery, or (Redis) when its lease expired on that delivery. It stays, holding its id,
 * until `requeue` makes it ready again or it is dropped as the oldest past `maxDeadLetters`.
 */
export interface DeadLetter {
  /** The job's id: the one given to `offer`, or the one the backend made. */
  readonly id: string
  /** The job's payload as offered. */
  readonly payload: Json
  /** Deliveries the job had when it was dead-lettered. */
  readonly deliveries: number
  /**
   * Why: the `reason` given to `deadLetter`, the last `nack`'s `error` (default `failed after <n> deliveries`),
   * or `lease expired on delivery <n>`.
   */
  readonly reason: string
  /** Clock millis when it was dead-lettered. */
  readonly at: number
}

/** How many jobs the queue holds in each state, at one moment. `ready + delayed` is what `capacity` bounds. */
export interface Depth {
  /** Jobs waiting for a taker. */
  readonly ready: number
  /** Jobs held by a taker (in any process sharing the queue), not yet settled. */
  readonly leased: number
  /** Jobs offered or nacked with a delay that has not run out yet. */
  readonly delayed: number
  /** Dead letters held (at most `maxDeadLetters`). */
  readonly dead: number
}

/**
 * The lease is no longer the job's current one: it expired (and the job went back to the queue, maybe to
 * another taker), or it was settled already. `renew`, `ack`, `nack` and `deadLetter` fail with it and change
 * nothing.
 */
export class LeaseLost extends Data.TaggedError("LeaseLost")<{
  /** The id of the job whose lease was lost. */
  readonly id: string
  /** The lost lease's `delivery`: which delivery of the job it was, from 1. */
  readonly delivery: number
}> {
  /** `lease of job <id> (delivery <delivery>) was lost`. */
  override get message() {
    return `lease of job ${this.id} (delivery ${this.delivery}) was lost`
  }
}


/**
 * The JobQueue contract: what every backend's queue offers (`MemoryJobQueue` in keel/memory, `RedisJobQueue`
 * in keel/redis). Reach it through the `JobQueue` tag, or pass it to `WorkerPool.consume`.
 */
export interface JobQueueService {
  /** Ready plus delayed jobs at which `offer` waits and `tryOffer` refuses. */
  readonly capacity: number
  /** How long a lease lasts without `renew`. */
  readonly leaseDuration: Duration.Duration
  /** Deliveries after which a nacked job is dead-lettered. */
  readonly maxDeliveries: number
  /**
   * Adds a job, waiting while the queue is at capacity; returns its id. An id the queue still holds is
   * returned at once, adding nothing. The wait can be interrupted.
   */
  readonly offer: (payload: Json, options?: OfferOptions) => Effect.Effect<string, QueueUnavailable>
  /** Adds a job, or fails at once with `QueueFull` when the queue is at capacity. */
  readonly tryOffer: (payload: Json, options?: OfferOptions) => Effect.Effect<string, QueueFull | QueueUnavailable>
  /**
   * Waits for a ready job and leases it to the caller's Scope: when the Scope closes with the lease still
   * unsettled, the job is ready again at once.
   */
  readonly take: Effect.Effect<Lease, QueueUnavailable, Scope.Scope>
  /**
   * `take` without a Scope, as `Semaphore.take` is to `withPermits`: the caller must settle the lease or
   * `release` it on every path (else it is taken over only when it expires). For runners whose own loop
   * guarantees that, and that would otherwise open and close a Scope per job (WorkerPool.consume). An
   * interrupted wait leases nothing.
   */
  readonly acquire: Effect.Effect<Lease, QueueUnavailable>
  /** The job is ready again at once, for any taker (what closing `take`'s Scope does); nothing if settled. */
  readonly release: (lease: Lease) => Effect.Effect<void>
  /** Extends the lease by `leaseDuration` from now. */
  readonly renew: (lease: Lease) => Effect.Effect<void, LeaseLost | QueueUnavailable>
  /** The job is done: it leaves the queue. */
  readonly ack: (lease: Lease) => Effect.Effect<void, LeaseLost | QueueUnavailable>
  /** The attempt failed: deliver the job again (after `delay`), or dead-letter it past `maxDeliveries`. */
  readonly nack: (lease: Lease, options?: NackOptions) => Effect.Effect<void, LeaseLost | QueueUnavailable>
  /** The job cannot succeed: it goes to the dead letters with `reason`. */
  readonly deadLetter: (lease: Lease, reason: string) => Effect.Effect<void, LeaseLost | QueueUnavailable>
  /** Dead letters, oldest first. */
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>, QueueUnavailable>
  /** Moves a dead letter back to the ready jobs, its attempts counted from 0 again; false if there is none. */
  readonly requeue: (id: string) => Effect.Effect<boolean, QueueUnavailable>
  /** How many jobs the queue holds in each state, now. */
  readonly depth: Effect.Effect<Depth, QueueUnavailable>
}

/**
 * The tag of the `JobQueueService`: an Effect that needs a job queue asks for it here, and a backend's
 * `layer` provides it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { MemoryJobQueue } from "keel/memory"
 * import { JobQueue } from "keel/services"
 *
 * const program = Effect.gen(function*() {
 *   const queue = yield* JobQueue.JobQueue
 *   yield* queue.offer({ to: "ada@example.com" }, { id: "welcome-ada" })
 *   const lease = yield* queue.take
 *   yield* Effect.log(`job ${lease.id}, delivery ${lease.delivery}`)
 *   yield* queue.ack(lease)
 * }).pipe(
 *   Effect.scoped,
 *   Effect.provide(MemoryJobQueue.layer({ capacity: 1000, leaseDuration: "30 seconds", maxDeliveries: 5 }))
 * )
 * ```
 */
export class JobQueue extends Context.Tag("keel/JobQueue")<JobQueue, JobQueueService>() {}

/** The options every backend takes, besides how it reaches its storage. */
export interface QueueOptions {
  /** Ready plus delayed jobs at which offers wait. */
  readonly capacity: number
  /** How long a lease lasts without `renew`. */
  readonly leaseDuration: Duration.DurationInput
  /** Deliveries after which a nacked job is dead-lettered. */
  readonly maxDeliveries: number
  /** Dead letters kept; past it the oldest is dropped. Default 1000. */
  readonly maxDeadLetters?: number
}

/** Dead letters a queue keeps when `QueueOptions.maxDeadLetters` is not given. */
export const defaultMaxDeadLetters = 1000

/**
 * Checks `options` as the contract requires of every backend, and dies with `IllegalArgumentException`
 * naming each invalid one (`<backend>: capacity must be an integer ≥ 1 (got 0)`): `capacity`,
 * `maxDeliveries` and `maxDeadLetters` integers ≥ 1, `leaseDuration` finite and at least 1 ms. A backend of
 * your own calls it from its `make`, as Keel's do.
 */
export const validateOptions = (backend: string, options: QueueOptions): Effect.Effect<void> => {
  const leaseDuration = Validation.tryDuration(options.leaseDuration)
  const maxDeadLetters = options.maxDeadLetters ?? defaultMaxDeadLetters
  return Validation.validate(backend, [
    ["capacity", options.capacity, Validation.isIntegerFrom(options.capacity, 1), Validation.integerFrom(1)],
    [
      "leaseDuration",
      leaseDuration ?? options.leaseDuration,
      leaseDuration !== undefined && DurationModule.isFinite(leaseDuration) && DurationModule.toMillis(leaseDuration) >= 1,
      "a finite duration of at least 1 ms"
    ],
    ["maxDeliveries", options.maxDeliveries, Validation.isIntegerFrom(options.maxDeliveries, 1), Validation.integerFrom(1)],
    ["maxDeadLetters", maxDeadLetters, Validation.isIntegerFrom(maxDeadLetters, 1), Validation.integerFrom(1)]
  ])
}

/**
 * How a backend offers: `offer` receives what the job carries from the calling fiber (its span and deadline,
 * with `options.deadline`). When tracing is on the offer runs in a producer span `send <queue>`, and the job
 * carries that span, so that its run shows in the trace as a consequence of the send. A backend of your own
 * calls it around its offer, as Keel's do.
 */
export const offerCarrying = <A, E>(
  queue: string,
  options: OfferOptions | undefined,
  offer: (carried: Propagation.Carried | undefined) => Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.withFiberRuntime((fiber) => {
    if (!isTracing(fiber)) return offer(Propagation.captureFrom(fiber, options?.deadline))
    const inSpan = Effect.withFiberRuntime<A, E>((inner) => offer(Propagation.captureFrom(inner, options?.deadline)))
    return Effect.withSpan(inSpan, `send ${queue}`, {
      kind: "producer",
      attributes: {
        "messaging.system": "keel",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
        ...(options?.id === undefined ? {} : { "messaging.message.id": options.id })
      }
    })
  })

const queueMetrics = {
  jobs: Metric.gauge("keel_queue_jobs", { description: "jobs the queue holds, by state" }),
  takeovers: Metric.counter("keel_queue_lease_takeovers_total", {
    description: "expired leases taken back from their holder",
    incremental: true
  }),
  renewalsFailed: Metric.counter("keel_queue_lease_renewals_failed_total", {
    description: "lease renewals that failed",
    incremental: true
  }),
  deadLettered: Metric.counter("keel_queue_dead_lettered_total", {
    description: "jobs dead-lettered",
    incremental: true
  })
}

/** One value per state `Depth` counts, each named as the `state` label of `keel_queue_jobs` names it. */
const byState = <A>(of: (state: keyof Depth) => A): { readonly [State in keyof Depth]: A } => ({
  ready: of("ready"),
  leased: of("leased"),
  delayed: of("delayed"),
  dead: of("dead")
})

/** The metric series of one queue, as `metrics` returns them. */
export interface Metrics {
  /**
   * Gauges `keel_queue_jobs{state="ready"|"leased"|"delayed"|"dead"}`: the jobs in each state, as `depth`
   * counts them. Exact at every moment for an in-process backend; a distributed one says how fresh they are.
   */
  readonly jobs: { readonly [State in keyof Depth]: Metric.Metric.Gauge<number> }
  /**
   * Counter `keel_queue_lease_takeovers_total`: leases that expired unrenewed and were taken back from their
   * holder, so that the job is delivered again (or dead-lettered, past `maxDeliveries`).
   */
  readonly takeovers: Metric.Metric.Counter<number>
  /**
   * Counter `keel_queue_lease_renewals_failed_total`: `renew` calls that failed (`LeaseLost` or
   * `QueueUnavailable`).
   */
  readonly renewalsFailed: Metric.Metric.Counter<number>
  /**
   * Counter `keel_queue_dead_lettered_total`: jobs moved to the dead letters, by `deadLetter`, by `nack` on the
   * last delivery, or when their lease expired on it.
   */
  readonly deadLettered: Metric.Metric.Counter<number>
}

/**
 * The metrics of the queue named `queue` (tagged `queue=<name>`), to read them or to export them. Keel's backends
 * update them as they go (`metricsRecorder`); the counters count what this process did or observed, so that
 * summed over the processes sharing a queue they count the queue's events. Two queues of one name in one
 * process share their series.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { JobQueue } from "keel/services"
 *
 * const readyEmails = Metric.value(JobQueue.metrics("emails").jobs.ready)
 * const report = Effect.flatMap(readyEmails, (state) => Effect.log(`emails waiting: ${state.value}`))
 * ```
 */
export const metrics = (queue: string): Metrics => {
  const series = MetricSeries.series("queue", queue)
  return {
    jobs: byState((state) => series.of(queueMetrics.jobs, { state })),
    takeovers: series.of(queueMetrics.takeovers),
    renewalsFailed: series.of(queueMetrics.renewalsFailed),
    deadLettered: series.of(queueMetrics.deadLettered)
  }
}

/** How a backend updates the series of one queue (see `Metrics`); `metricsRecorder` makes it. */
export interface MetricsRecorder {
  /** Sets the `keel_queue_jobs` gauges to `depth`. */
  readonly recordDepth: (depth: Depth) => void
  /** Counts `count` expired leases taken back from their holders. */
  readonly countTakeovers: (count: number) => void
  /** Counts one `renew` that failed. */
  readonly countFailedRenewal: () => void
  /** Counts `count` jobs moved to the dead letters. */
  readonly countDeadLettered: (count: number) => void
}

/**
 * The recorder of the queue named `queue`'s metrics, made once per queue: its counters exist (at 0 if new) from
 * now on, so that a scrape shows them before anything happened; its gauges from the first `recordDepth`. A
 * backend of your own calls it from its `make`, as Keel's do, and so exports the same series.
 */
export const metricsRecorder = (queue: string): MetricsRecorder => {
  const series = MetricSeries.series("queue", queue)
  const stateLabels = byState((state) => series.labelsWith({ state }))
  const { labels } = series
  const { deadLettered, jobs, renewalsFailed, takeovers } = queueMetrics
  for (const counter of [takeovers, renewalsFailed, deadLettered]) counter.unsafeUpdate(0, labels)
  return {
    recordDepth: (depth) => {
      jobs.unsafeUpdate(depth.ready, stateLabels.ready)
      jobs.unsafeUpdate(depth.leased, stateLabels.leased)
      jobs.unsafeUpdate(depth.delayed, stateLabels.delayed)
      jobs.unsafeUpdate(depth.dead, stateLabels.dead)
    },
    countTakeovers: (count) => takeovers.unsafeUpdate(count, labels),
    countFailedRenewal: () => renewalsFailed.unsafeUpdate(1, labels),
    countDeadLettered: (count) => deadLettered.unsafeUpdate(count, labels)
  }
}
