/**
 * The embedded JobQueue: the contract of services/JobQueue.ts in the process's memory, the default backend
 * (a job server needs no other service to run).
 *
 * Guarantee: at least once within the process. Nothing survives the process: a restart starts empty. Every
 * job the queue holds is in one map, by id, in one state — ready (FIFO), delayed, leased or dead — which is
 * what makes `offer` idempotent and `depth` exact. Time is Effect's Clock: a delay or a lease expiry is a
 * fiber sleeping in the queue's Scope, so TestClock drives them, and closing the Scope stops them all.
 * Bounds: ready plus delayed jobs at most `capacity` (offers wait past it); dead letters at most
 * `maxDeadLetters` (past it the oldest is dropped, with a warning logged); leased jobs are bounded by the
 * takers. Metrics (`JobQueue.metrics(name)`): the depth gauges are set wherever a job changes state, so they
 * equal `depth` at every moment; an expiry counts a takeover, a `renew` of a lease no longer current a failed
 * renewal.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { type Propagation, QueueFull } from "keel"
import { JobQueue } from "keel/services"
import * as Signal from "#keel/internal/Signal"
import * as Waiters from "#keel/internal/Waiters"

/** The contract's options (`capacity`, `leaseDuration`, `maxDeliveries`, `maxDeadLetters`) and a name. */
export interface Options extends JobQueue.QueueOptions {
  /** Names the queue in its metrics (`JobQueue.metrics(name)`) and its spans (`send <name>`). Default `job-queue`. */
  readonly name?: string
}

type State =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Delayed"; readonly timer: Fiber.RuntimeFiber<void> }
  | {
    readonly _tag: "Leased"
    readonly lease: JobQueue.Lease
    readonly lost: Signal.Signal
    /** Clock millis; `renew` moves it. */
    expiresAt: number
    readonly timer: Fiber.RuntimeFiber<void>
  }
  | { readonly _tag: "Dead"; readonly letter: JobQueue.DeadLetter }

interface Job {
  readonly id: string
  readonly payload: JobQueue.Json
  readonly enqueuedAt: number
  readonly carried: Propagation.Carried | undefined
  /** Deliveries so far. */
  deliveries: number
  state: State
}

/**
 * A queue in this process's memory, empty, living as long as the current Scope: closing it stops its timers
 * (delays, lease expiries), and the queue is gone with every job it held. Dies when the options are invalid
 * (`capacity`, `maxDeliveries`, `maxDeadLetters` integers ≥ 1, `leaseDuration` finite and at least 1 ms). Its
 * operations never fail with `QueueUnavailable`; ids it makes are `job-1`, `job-2`, …
 */
export const make = (options: Options): Effect.Effect<JobQueue.JobQueueService, never, Scope.Scope> =>
  Effect.gen(function*() {
    yield* JobQueue.validateOptions("MemoryJobQueue.make", options)
    const leaseDuration = Duration.decode(options.leaseDuration)
    const maxDeadLetters = options.maxDeadLetters ?? JobQueue.defaultMaxDeadLetters
    const scope = yield* Effect.scope
    const clock = yield* Effect.clock
    const jobs = new Map<string, Job>()
    const ready: Array<string> = []
    const dead: Array<string> = []
    let delayed = 0
    let leased = 0
    let nextId = 1
    const changed = Waiters.make()
    const queueName = options.name ?? "job-queue"
    const metrics = JobQueue.metricsRecorder(queueName)
    const currentDepth = (): JobQueue.Depth => ({ ready: ready.length, leased, delayed, dead: dead.length })
    const recordDepth = () => metrics.recordDepth(currentDepth())
    // After every change of a job's state: the gauges follow, and whoever waits for a change looks again.
    const stateChanged = () => {
      recordDepth()
      changed.wake()
    }
    recordDepth()

    const runInScope = (effect: Effect.Effect<void>) => Effect.forkIn(Effect.interruptible(effect), scope)

    const lostOf = (lease: JobQueue.Lease) => new JobQueue.LeaseLost({ id: lease.id, delivery: lease.delivery })

    const makeReady = (job: Job) => {
      job.state = { _tag: "Ready" }
      ready.push(job.id)
      stateChanged()
    }

    // A job out of its current state, so it can enter the next one; its timers are stopped by the caller.
    const leave = (job: Job) => {
      switch (job.state._tag) {
        case "Delayed":
          delayed--
          break
        case "Leased":
          leased--
          break
        case "Dead":
          dead.splice(dead.indexOf(job.id), 1)
          break
        case "Ready":
          ready.splice(ready.indexOf(job.id), 1)
      }
    }

    const delay = (job: Job, wait: Duration.Duration) =>
      Effect.gen(function*() {
        if (Duration.toMillis(wait) <= 0) return makeReady(job)
        delayed++
        recordDepth()
        const timer = yield* runInScope(Effect.zipRight(
          Effect.sleep(wait),
          Effect.sync(() => {
            delayed--
            makeReady(job)
          })
        ))
        job.state = { _tag: "Delayed", timer }
      })

    const kill = (job: Job, reason: string) =>
      Effect.gen(function*() {
        job.state = {
          _tag: "Dead",
          letter: { id: job.id, payload: job.payload, deliveries: job.deliveries, reason, at: clock.unsafeCurrentTimeMillis() }
        }
        dead.push(job.id)
        metrics.countDeadLettered(1)
        if (dead.length > maxDeadLetters) {
          const dropped = dead.shift()!
          jobs.delete(dropped)
          yield* Effect.logWarning(`MemoryJobQueue: dead letter ${dropped} dropped (more than ${maxDeadLetters} kept)`)
        }
        stateChanged()
      })

    const offerNow = (payload: JobQueue.Json, offerOptions: JobQueue.OfferOptions | undefined) =>
      JobQueue.offerCarrying(queueName, offerOptions, (carried) =>
        Effect.gen(function*() {
          const id = offerOptions?.id ?? `job-${nextId++}`
          if (jobs.has(id)) return id
          const enqueuedAt = clock.unsafeCurrentTimeMillis()
          const job: Job = { id, payload, enqueuedAt, carried, deliveries: 0, state: { _tag: "Ready" } }
          jobs.set(id, job)
          yield* delay(job, Duration.decode(offerOptions?.delay ?? Duration.zero))
          return id
        }))

    const hasRoom = () => ready.length + delayed < options.capacity
    const holds = (offerOptions: JobQueue.OfferOptions | undefined) => offerOptions?.id !== undefined && jobs.has(offerOptions.id)

    const offer = (payload: JobQueue.Json, offerOptions?: JobQueue.OfferOptions): Effect.Effect<string> =>
      Effect.suspend(() =>
        hasRoom() || holds(offerOptions)
          ? offerNow(payload, offerOptions)
          : Effect.zipRight(changed.until(() => hasRoom() || holds(offerOptions)), offer(payload, offerOptions))
      )

    const tryOffer = (payload: JobQueue.Json, offerOptions?: JobQueue.OfferOptions) =>
      Effect.suspend(() =>
        hasRoom() || holds(offerOptions)
          ? offerNow(payload, offerOptions)
          : Effect.fail(new QueueFull({ capacity: options.capacity }))
      )

    /** The job of a lease that is still its current one. */
    const current = (lease: JobQueue.Lease): Job | undefined => {
      const job = jobs.get(lease.id)
      return job !== undefined && job.state._tag === "Leased" && job.state.lease === lease ? job : undefined
    }

    // Ends a lease on its way to another state: its expiry timer stops.
    const settle = <A>(lease: JobQueue.Lease, next: (job: Job) => Effect.Effect<A>): Effect.Effect<A, JobQueue.LeaseLost> =>
      Effect.suspend(() => {
        const job = current(lease)
        if (job === undefined) return Effect.fail(lostOf(lease))
        const timer = (job.state as Extract<State, { _tag: "Leased" }>).timer
        leave(job)
        return Effect.zipRight(Fiber.interruptFork(timer), next(job))
      }).pipe(Effect.uninterruptible)

    const expire = (job: Job): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (job.state._tag !== "Leased") return Effect.void
        const { expiresAt, lost } = job.state
        const left = expiresAt - clock.unsafeCurrentTimeMillis()
        if (left > 0) return Effect.zipRight(Effect.sleep(Duration.millis(left)), expire(job))
        leave(job)
        metrics.countTakeovers(1)
        lost.fire()
        makeReady(job)
        return Effect.void
      })

    const lease = Effect.gen(function*() {
      const job = jobs.get(ready.shift()!)!
      job.deliveries++
      leased++
      const lost = Signal.make()
      const granted: JobQueue.Lease = {
        id: job.id,
        payload: job.payload,
        delivery: job.deliveries,
        enqueuedAt: job.enqueuedAt,
        ...(job.carried === undefined ? {} : { carried: job.carried }),
        lost: lost.await,
        onLost: lost.listen
      }
      const expiresAt = clock.unsafeCurrentTimeMillis() + Duration.toMillis(leaseDuration)
      // The state exists before its timer runs: the timer reads it.
      const leasedState = { _tag: "Leased" as const, lease: granted, lost, expiresAt, timer: undefined as unknown as Fiber.RuntimeFiber<void> }
      job.state = leasedState
      const timer = yield* runInScope(Effect.suspend(() => expire(job)))
      job.state = { ...leasedState, timer }
      stateChanged()
      return granted
    })

    // An unsettled lease given back (its taker's Scope closed, or `release`): the job is ready again at once.
    // A settled or lost lease is left as it is.
    const release = (granted: JobQueue.Lease) => Effect.ignore(settle(granted, (job) => Effect.sync(() => makeReady(job))))

    // Without a Scope: the lease is taken in one uninterruptible step, only the wait before it can be
    // interrupted. Another taker may get there first, so the wait repeats.
    const acquire: Effect.Effect<JobQueue.Lease> = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() =>
        ready.length > 0 ? lease : Effect.zipRight(restore(changed.until(() => ready.length > 0)), acquire)
      )
    )

    // The lease is taken and bound to the Scope in one uninterruptible step; the wait for a ready job before
    // it can be interrupted. Another taker may get there first, so the wait repeats.
    const take: Effect.Effect<JobQueue.Lease, never, Scope.Scope> = Effect.flatMap(
      Effect.acquireRelease(
        Effect.suspend(() => (ready.length > 0 ? Effect.asSome(lease) : Effect.succeedNone)),
        (granted) => Option.match(granted, { onNone: () => Effect.void, onSome: release })
      ),
      Option.match({
        onNone: () => Effect.zipRight(changed.until(() => ready.length > 0), take),
        onSome: Effect.succeed
      })
    )

    const service: JobQueue.JobQueueService = {
      capacity: options.capacity,
      leaseDuration,
      maxDeliveries: options.maxDeliveries,
      offer,
      tryOffer,
      take,
      acquire,
      release,
      renew: (granted) =>
        Effect.suspend(() => {
          const job = current(granted)
          if (job === undefined) {
            metrics.countFailedRenewal()
            return Effect.fail(lostOf(granted))
          }
          ;(job.state as Extract<State, { _tag: "Leased" }>).expiresAt = clock.unsafeCurrentTimeMillis() +
            Duration.toMillis(leaseDuration)
          return Effect.void
        }),
      ack: (granted) =>
        settle(granted, (job) =>
          Effect.sync(() => {
            jobs.delete(job.id)
            stateChanged()
          })),
      nack: (granted, nackOptions?: JobQueue.NackOptions) =>
        settle(granted, (job) =>
          job.deliveries >= options.maxDeliveries
            ? kill(job, nackOptions?.error ?? `failed after ${job.deliveries} deliveries`)
            : delay(job, Duration.decode(nackOptions?.delay ?? Duration.zero))),
      deadLetter: (granted, reason) => settle(granted, (job) => kill(job, reason)),
      deadLetters: Effect.sync(() =>
        dead.map((id) => (jobs.get(id)!.state as Extract<State, { _tag: "Dead" }>).letter)
      ),
      requeue: (id) =>
        Effect.sync(() => {
          const job = jobs.get(id)
          if (job === undefined || job.state._tag !== "Dead") return false
          leave(job)
          job.deliveries = 0
          makeReady(job)
          return true
        }),
      depth: Effect.sync(currentDepth)
    }
    return service
  })

/**
 * The queue as the `JobQueue` service, living as long as the layer (each build of the layer is a new, empty
 * queue).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { MemoryJobQueue } from "keel/memory"
 * import { JobQueue } from "keel/services"
 *
 * const JobQueueLive = MemoryJobQueue.layer({ capacity: 10_000, leaseDuration: "30 seconds", maxDeliveries: 5 })
 *
 * const enqueue = (to: string) => Effect.flatMap(JobQueue.JobQueue, (queue) => queue.offer({ to }))
 *
 * const program = enqueue("ada@example.com").pipe(Effect.provide(JobQueueLive))
 * ```
 */
export const layer = (options: Options): Layer.Layer<JobQueue.JobQueue> => Layer.scoped(JobQueue.JobQueue, make(options))
