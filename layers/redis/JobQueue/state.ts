/**
 * What the parts of one queue share. The five fibers (promoter, watcher, leaseWatch, fetcher, acker) and the
 * operations callers run (offer, take, ack, the other settles) meet only here and in the per-lease `Held`
 * records (lease.ts): plain fields, read and written without a yield between the read and the write, and
 * Waiters for the fibers and callers that wait until one of them changes.
 *
 * Local wake-ups: every change this process makes or sees bumps `version`; a waiter remembers the version it
 * last acted on, so a change between its Redis call and its wait is not missed.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { JobQueue } from "keel/services"
import type * as Signal from "#keel/internal/Signal"
import * as Waiters from "#keel/internal/Waiters"

/** What the queue knows of a lease it granted; the Lease itself is the contract's plain object. */
export interface Held {
  /** The consumer that leased the job: part of the lease's token, which every settle checks in Redis. */
  readonly consumer: string
  /** The job's stream entry when it was leased: part of the lease's token. */
  readonly entry: string
  /** Fired when the lease is lost (read by the lease's `lost` and `onLost`). */
  readonly lost: Signal.Signal
  /** Settled by this process: the release and the lease watch have nothing more to do. */
  settled: boolean
  /** Settle calls in flight: the lease watch does not judge the lease meanwhile. */
  settling: number
}

/** A `take` or `acquire` waiting in line for the fetcher to hand it a lease. */
export interface Taker {
  /** Completes the taker's wait with a lease or a failure. */
  readonly resume: (result: Effect.Effect<JobQueue.Lease, JobQueue.QueueUnavailable>) => void
  /** The lease handed to this taker, until its fiber has taken it up. */
  lease: JobQueue.Lease | undefined
}

/** An `ack` waiting for the acker to send it. */
export interface PendingAck {
  /** The lease to ack. */
  readonly lease: JobQueue.Lease
  /** What the queue knows of it (its token, and its `settling` count, raised while the ack waits). */
  readonly state: Held
  /** Completes the ack's wait with Redis's answer. */
  readonly resume: (result: Effect.Effect<void, JobQueue.QueueUnavailable | JobQueue.LeaseLost>) => void
}

/** The shared state of one queue (see the module comment); `makeState` makes it empty. */
export interface State {
  /**
   * Whether the stream and consumer group are known to exist, so calls need not create them first. Set by
   * `ensureGroup` (calls.ts) once it made sure of them, cleared by any call that meets NOGROUP (someone deleted
   * them); read by `ensureGroup` and by the retire finalizer (index.ts), which has nothing to retire from when
   * no group was made.
   */
  groupReady: boolean
  /**
   * The queue is closing: takes and acks fail at once instead of waiting for fibers that are stopping. Set by a
   * finalizer (index.ts) that runs before the fibers stop; read by `take`/`acquire` (take.ts) and `ack`
   * (settle.ts).
   */
  closed: boolean
  /**
   * Counts the changes this process made or saw (an offer added, a lease granted or settled, an entry added by
   * anyone, a delayed job promoted, a dead letter requeued). Raised only by `bump`; read by the waits for a
   * change: offers waiting for room (offer.ts) and the fetcher when the queue had fewer jobs than takers.
   */
  version: number
  /** Woken by `bump`; `changeSince` waits on it. */
  readonly changed: Waiters.Waiters
  /**
   * The leases this queue granted and has not settled, for the lease watch. Added to by `grant` (lease.ts);
   * removed from when a lease is settled or lost (`concluded` in lease.ts) and by the lease watch, which reads it.
   */
  readonly granted: Set<JobQueue.Lease>
  /**
   * Takers waiting for a lease, oldest first. Joined by `take`/`acquire` (take.ts), which leave it when
   * interrupted; the fetcher reads its size (as many jobs as takers wait are leased in one script call, one
   * call at a time), hands out leases in order and empties it with a failure when Redis is unreachable or the
   * queue closes.
   */
  readonly takers: Set<Taker>
  /** Woken when a taker joins `takers`; the fetcher waits on it while no one waits. */
  readonly takersWaiting: Waiters.Waiters
  /**
   * Clock millis of the last walk for expired leases that reached the end of the PEL (see scripts/take.lua).
   * Read by the fetcher to decide whether the next take call walks again (once per `recheck`), written by it
   * when a walk reached the end.
   */
  lastFullScanAt: number
  /**
   * Acks waiting for the acker, which sends all that are waiting in one script call, one call at a time: an ack
   * costs one call when the queue is quiet, a share of one under load. Appended to by `ack` (settle.ts); taken
   * from by the acker, at most `maxBatch` a call; failed by the acker when it stops.
   */
  pendingAcks: Array<PendingAck>
  /**
   * The acks of the call the acker has in flight, so that they too are answered (failed) if the acker is
   * stopped while it waits for Redis. Written and read only by the acker.
   */
  sendingAcks: Array<PendingAck>
  /** Woken when an ack joins `pendingAcks`; the acker waits on it while none is pending. */
  readonly acksWaiting: Waiters.Waiters
}

/** The state of a queue just made: no group known, nothing granted, no one waiting. */
export const makeState = (): State => ({
  groupReady: false,
  closed: false,
  version: 0,
  changed: Waiters.make(),
  granted: new Set(),
  takers: new Set(),
  takersWaiting: Waiters.make(),
  lastFullScanAt: Number.NEGATIVE_INFINITY,
  pendingAcks: [],
  sendingAcks: [],
  acksWaiting: Waiters.make()
})

/** Records a change: `version` moves on and whoever waits for a change looks again. */
export const bump = (state: State) => {
  state.version++
  state.changed.wake()
}

/** Waits until `version` differs from `seen` (a change since the waiter last looked), or `recheck` at most. */
export const changeSince = (state: State, seen: number, recheck: Duration.Duration) =>
  Effect.asVoid(Effect.timeoutOption(state.changed.until(() => state.version !== seen), recheck))
