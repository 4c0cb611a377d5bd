/**
 * Leases as this process knows them. A lease is the contract's plain object, which the caller holds; what the
 * queue needs to settle and watch it (its token in Redis, its lost signal, whether it is settled or being
 * settled) is a `Held` record kept beside it in `held`, found by the lease itself. A lease is the pair (entry,
 * attempts) with its consumer: every delivery changes it, so settling a lease someone else has taken over (even
 * the same consumer) is refused in Redis.
 */
import { Propagation } from "keel"
import { JobQueue } from "keel/services"
import * as Signal from "#keel/internal/Signal"
import { bump, type Held, type State } from "./state.js"

/** The `Held` record of every lease granted in this process and not yet collected. */
export const held = new WeakMap<JobQueue.Lease, Held>()

/** How many fields the take script replies per lease: id, entry, attempts, payload, enqueuedAt, carried. */
export const leaseFields = 6

/**
 * A lease the take script granted (id, entry, attempts, payload, enqueuedAt, carried) to `consumer`, now held
 * and watched here.
 */
export const grant = (state: State, consumer: string, fields: ReadonlyArray<unknown>): JobQueue.Lease => {
  const [id, entry, attempts, payload, enqueuedAt, carriedText] = fields as ReadonlyArray<string>
  const lost = Signal.make()
  const carried = Propagation.decode(carriedText)
  const lease: JobQueue.Lease = {
    id: id!,
    payload: JSON.parse(payload!) as JobQueue.Json,
    delivery: Number(attempts),
    enqueuedAt: Number(enqueuedAt),
    ...(carried === undefined ? {} : { carried }),
    lost: lost.await,
    onLost: lost.listen
  }
  held.set(lease, { consumer, entry: entry!, lost, settled: false, settling: 0 })
  state.granted.add(lease)
  bump(state)
  return lease
}

/** The error of a settle refused because the lease is no longer this one's. */
export const lostOf = (lease: JobQueue.Lease) => new JobQueue.LeaseLost({ id: lease.id, delivery: lease.delivery })

/**
 * What the queue records of a settle's answer from Redis (`status`; `ends` when the settle ends the lease, as
 * all but a renew do); the lease's lost listeners hear of a loss at once. True unless the lease was lost.
 */
export const concluded = (state: State, lease: JobQueue.Lease, leaseState: Held, status: string, ends: boolean) => {
  const lost = status === "lost"
  if (lost || ends) {
    leaseState.settled = true
    state.granted.delete(lease)
  }
  if (lost) leaseState.lost.fire()
  else if (ends) bump(state)
  return !lost
}
