/**
 * The distributed JobQueue: the contract of services/JobQueue.ts on Redis Streams, so that several processes
 * on several machines share one queue's work (same options and behaviour as layers/memory/JobQueue.ts).
 *
 * Guarantee: at least once across processes and machines, for as long as Redis keeps its data (turn its
 * persistence on to survive a Redis restart). A process that dies holding leases loses nothing: its jobs are
 * taken over by another consumer once their lease has expired. Handlers must be idempotent. Ordering is FIFO
 * for one taker; across takers it is not guaranteed.
 *
 * Redis structures, all under the prefix `keel:jobs:<name>:` (one Redis, not a Cluster: the scripts touch
 * job hashes whose names they compute):
 * - `stream`: one entry `{ id }` per job that is ready or leased, in the consumer group `…:group`. A ready job
 *   is an entry not yet delivered to the group; a leased job is an entry in the group's pending entries list
 *   (PEL), owned by the consumer that took it, whose idle time is the age of its lease. Settled entries are
 *   acknowledged and deleted at once, so the stream holds only live jobs: ready = XLEN − pending.
 * - `job:<id>`: a hash with the job's `payload` (JSON text), `enqueuedAt`, `attempts` (deliveries so far, the
 *   source of truth for `attempt`), `state` (ready | delayed | leased | dead), its current stream `entry` and
 *   leasing `consumer`, and for a dead job its `reason` and `at`. It exists exactly as long as the queue holds
 *   the job, which is what makes `offer` idempotent by id. A lease is the pair (entry, attempts): every
 *   delivery changes it, so settling a lease someone else has taken over (even the same consumer) is refused.
 * - `delayed`: a sorted set of job ids scored by the Redis time (ms) at which they become ready.
 * - `dead`: a list of dead job ids, oldest first, at most `maxDeadLetters` long (past it the oldest is dropped
 *   with its hash, and a warning logged).
 *
 * Every change that touches more than one structure is one Lua script (scripts/, each with its own comment), so
 * that no other consumer ever sees a job half moved and `depth` is exact. Reads that need no atomicity (the
 * lease watch, the wake-up read) are plain commands.
 *
 * Waiting. `take` does not block inside `XREADGROUP`: a blocked group read cannot be withdrawn, so a taker
 * interrupted while waiting would have its next job delivered to nobody (stuck in the PEL until its lease expired,
 * with one attempt spent). Instead one fiber per queue blocks on a dedicated connection in a plain `XREAD BLOCK`
 * (which takes nothing) and notes when an entry is added anywhere. Takers wait in line in the process; one
 * fetcher fiber runs the take script for as many of them as wait (its non-blocking `XREADGROUP` and `XAUTOCLAIM`
 * lease each job atomically with its attempt count) and hands the leases out in order, so under load one call
 * leases many jobs; when the queue has fewer, it waits for the next change. Likewise acks wait for one acker
 * fiber, which settles all that are waiting in one call. Every wait of a taker can be interrupted, and so can
 * the fetcher's wait for a reply (a Redis that hangs must not hold up a shutdown): a lease that arrives for a
 * taker no longer waiting is released at once, one that reaches its taker is bound to the taker's Scope. The
 * fetcher also re-checks every quarter of a lease, at most every second (expired leases of other consumers become
 * claimable without any entry being added), and offers waiting for room re-check every 50 ms (room is made by
 * takers in other processes).
 *
 * Time: Redis's clock decides idle times (lease expiry) and when delayed jobs are due, so all processes agree;
 * the process's `Clock` stamps `enqueuedAt` and dead letters' `at`, and paces the fibers.
 *
 * Metrics (`JobQueue.metrics(name)`): the `keel_queue_jobs` gauges are this process's view of the depth in Redis,
 * refreshed every second (`depthRefresh`) and whenever `depth` is called; each process counts the events it
 * observed: the expired leases its takes took over (and those dead-lettered on their last delivery), its failed
 * renewals, and the jobs its settles dead-lettered, so the sum over the processes is the queue's.
 *
 * Failures: each Redis call is bounded in time (`callTimeout`) and retried with `Backoff` (3 attempts in all); then
 * the operation fails with `QueueUnavailable`. Connections this module opens do not keep commands queued across
 * reconnection attempts (`maxRetriesPerRequest: 0`, reconnecting at most every 500 ms). A retried call may have run once already: offers are safe (the
 * id is chosen before the first try), a take may then leave a lease nobody holds (it expires and the job is
 * taken over, one attempt spent), and a settle may report `LeaseLost` for a lease it did settle.
 *
 * Where it happens, one module each: `settings.ts` (what a queue is made with) and `keys.ts` (its Redis names);
 * `scripts.ts` with `scripts/*.lua` (every change of a job's state); `state.ts` (what the parts share) and
 * `lease.ts` (what this process knows of the leases it granted); `calls.ts` (one Redis call, bounded and retried);
 * the operations callers run, `offer.ts`, `take.ts`, `settle.ts` and `deadLetters.ts`; and one per fiber:
 * `watcher.ts`, `promoter.ts`, `leaseWatch.ts`, `fetcher.ts`, `acker.ts`, and `depth.ts` (with the service's
 * `depth`). This module wires them into the service.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type { Redis } from "ioredis"
import { JobQueue } from "keel/services"
import { connectionOptions, evalScript, isClient, open, quiet, quit, quitWithinMillis } from "../Connection.js"
import { acker } from "./acker.js"
import { makeCalls } from "./calls.js"
import { listDeadLetters, requeue } from "./deadLetters.js"
import { makeDepth } from "./depth.js"
import { fetcher } from "./fetcher.js"
import { leaseWatch } from "./leaseWatch.js"
import { makeOffer } from "./offer.js"
import { promoter } from "./promoter.js"
import { scripts } from "./scripts.js"
import { delayMillisOf, settingsOf } from "./settings.js"
import { makeSettle } from "./settle.js"
import { makeState } from "./state.js"
import { makeTake } from "./take.js"
import { watcher } from "./watcher.js"
import * as Validation from "#keel/internal/Validation"

/** Options of `make` and `layer`: the contract's, and how to reach Redis. */
export interface Options extends JobQueue.QueueOptions {
  /**
   * An ioredis client the caller owns (left open when the queue closes), or the URL of a Redis to connect to.
   * Either way the queue opens one more connection of its own, for its blocking reads.
   */
  readonly redis: Redis | {
    /** The Redis to connect to, as ioredis takes it: `redis://[[user]:password@]host[:port][/db]`. */
    readonly url: string
  }
  /**
   * The queue's name: its keys are `keel:jobs:<name>:…`, its metrics `JobQueue.metrics(name)`. Queues with the
   * same name share their jobs.
   */
  readonly name: string
  /** This queue's consumer name in the group. Default: a fresh unique id per `make`. */
  readonly consumer?: string
}

/**
 * A queue on Redis, living as long as the current Scope, whose fibers (wake-up read, delayed-job promoter,
 * lease watch, fetcher, acker, depth gauges) it starts; the stream and consumer group are created when first
 * needed.
 * Closing the Scope stops the fibers, fails the takes and acks still waiting with `QueueUnavailable` (`the
 * queue is closed`), leaves the group if this consumer holds no lease, and closes the connections it opened
 * (within 500 ms each). The jobs stay in Redis. Dies when the options are invalid or `name` is empty. Making
 * it sends nothing to Redis; while Redis is away, operations fail with `QueueUnavailable`. Ids it makes are
 * `job-<uuid>`.
 */
export const make = (options: Options): Effect.Effect<JobQueue.JobQueueService, never, Scope.Scope> =>
  Effect.gen(function*() {
    yield* JobQueue.validateOptions("RedisJobQueue.make", options)
    yield* Validation.validate("RedisJobQueue.make", [["name", options.name, options.name !== "", "a non-empty string"]])
    const settings = settingsOf(options)
    const { consumer, group, keys } = settings

    // Connections: the caller's client (left open) or one of ours, and a dedicated one for the blocking read.
    const ownsClient = !isClient(options.redis)
    const client = isClient(options.redis) ? options.redis : open(options.redis.url, { enableAutoPipelining: true })
    const blocking = quiet(client.duplicate({ ...connectionOptions, commandTimeout: undefined }))
    // The blocking connection may be inside an XREAD BLOCK: a QUIT would wait behind it, so it is cut at once.
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(Effect.sync(() => blocking.disconnect()), ownsClient ? quit(client) : Effect.void)
    )

    const state = makeState()
    const calls = makeCalls(state, client, settings)
    const { ack, release, settle } = makeSettle(state, calls, settings)
    // A lease granted after its taker stopped waiting goes back to the queue at once, in the background.
    const runtime = yield* Effect.runtime<never>()
    const releaseInBackground = (lease: JobQueue.Lease) => void Runtime.runFork(runtime)(release(lease))
    const { acquire, take } = makeTake(state, release, releaseInBackground)
    const { offer, tryOffer } = makeOffer(state, calls, settings)
    const { depth, refresher } = makeDepth(calls, settings)

    // Finalizers run in reverse: the fibers stop, then the consumer retires, then the connections close.
    yield* Effect.addFinalizer(() =>
      Effect.ignore(calls.attempt(
        "retire",
        () => state.groupReady ? evalScript(client, scripts.retire, [keys.stream], [group, consumer]) : Promise.resolve(0),
        Duration.millis(quitWithinMillis)
      ))
    )
    yield* Effect.forkScoped(Effect.interruptible(promoter(state, calls, settings)))
    yield* Effect.forkScoped(Effect.interruptible(watcher(state, calls, settings, blocking)))
    yield* Effect.forkScoped(Effect.interruptible(leaseWatch(state, calls, settings, client)))
    yield* Effect.forkScoped(Effect.interruptible(fetcher(state, calls, settings, releaseInBackground)))
    yield* Effect.forkScoped(Effect.interruptible(acker(state, calls, settings)))
    yield* Effect.forkScoped(Effect.interruptible(refresher))
    // Before the fibers stop: takes and acks from now on fail at once instead of waiting for them.
    yield* Effect.addFinalizer(() => Effect.sync(() => void (state.closed = true)))

    const service: JobQueue.JobQueueService = {
      capacity: options.capacity,
      leaseDuration: settings.leaseDuration,
      maxDeliveries: options.maxDeliveries,
      offer,
      tryOffer,
      take,
      acquire,
      release,
      renew: (lease) =>
        Effect.tapError(settle(lease, "renew"), () => Effect.sync(settings.metrics.countFailedRenewal)),
      ack,
      nack: (lease, nackOptions?: JobQueue.NackOptions) =>
        settle(
          lease,
          "nack",
          delayMillisOf(nackOptions?.delay),
          nackOptions?.error ?? `failed after ${lease.delivery} deliveries`
        ),
      deadLetter: (lease, reason) => settle(lease, "dead", 0, reason),
      deadLetters: listDeadLetters(calls, settings),
      requeue: requeue(state, calls, settings),
      depth
    }
    return service
  })

/**
 * The queue as the `JobQueue` service, living as long as the layer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RedisJobQueue } from "keel/redis"
 * import { JobQueue } from "keel/services"
 *
 * const JobQueueLive = RedisJobQueue.layer({
 *   redis: { url: "redis://localhost:6379" },
 *   name: "emails",
 *   capacity: 10_000,
 *   leaseDuration: "30 seconds",
 *   maxDeliveries: 5
 * })
 *
 * const program = Effect.flatMap(JobQueue.JobQueue, (queue) => queue.depth).pipe(Effect.provide(JobQueueLive))
 * ```
 */
export const layer = (options: Options): Layer.Layer<JobQueue.JobQueue> => Layer.scoped(JobQueue.JobQueue, make(options))
