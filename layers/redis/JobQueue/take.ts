/**
 * Taking a job, the taker's side. `take` does not block inside `XREADGROUP`: a blocked group read cannot be
 * withdrawn, so a taker interrupted while waiting would have its next job delivered to nobody (stuck in the PEL
 * until its lease expired, with one attempt spent). Instead takers wait in line in the process, and the fetcher
 * (fetcher.ts) leases jobs for them and hands the leases out in order. Every wait of a taker can be interrupted:
 * a taker interrupted while waiting leaves the line, and a lease already handed to it goes back to the queue at
 * once; a lease that reaches its taker is bound to the taker's Scope.
 */
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import type { JobQueue } from "keel/services"
import { unavailable } from "./calls.js"
import type { State, Taker } from "./state.js"

/**
 * The service's `take` and `acquire` for the queue with `state`. `release` gives a lease back (at the end of a
 * `take`'s Scope); `releaseInBackground` gives back, without waiting, a lease whose taker stopped waiting.
 */
export const makeTake = (
  state: State,
  release: (lease: JobQueue.Lease) => Effect.Effect<void>,
  releaseInBackground: (lease: JobQueue.Lease) => void
) => {
  /**
   * Waits for the fetcher to hand this taker a lease. A taker interrupted while waiting leaves the line; a
   * lease already handed to it goes back to the queue at once.
   */
  const awaitLease = Effect.async<JobQueue.Lease, JobQueue.QueueUnavailable>((resume) => {
    if (state.closed) return resume(Effect.fail(unavailable("take: the queue is closed")))
    const taker: Taker = { resume, lease: undefined }
    state.takers.add(taker)
    state.takersWaiting.wake()
    return Effect.sync(() => {
      state.takers.delete(taker)
      if (taker.lease !== undefined) releaseInBackground(taker.lease)
    })
  })

  /** A lease that reaches its taker is bound to the taker's Scope in the same uninterruptible step. */
  const take: Effect.Effect<JobQueue.Lease, JobQueue.QueueUnavailable, Scope.Scope> = Effect.flatMap(
    Effect.scope,
    (scope) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(awaitLease), (lease) => Effect.as(Scope.addFinalizer(scope, release(lease)), lease))
      )
  )
  // (A lease that reaches an `acquire` is the caller's to settle or release.)
  const acquire = awaitLease

  return { take, acquire }
}
