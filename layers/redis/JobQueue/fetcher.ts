/**
 * The fetcher: one fiber per queue that leases jobs for the takers waiting in line (take.ts). It runs the take
 * script for as many of them as wait, at most `maxBatch` (its non-blocking `XREADGROUP` and `XAUTOCLAIM` lease
 * each job atomically with its attempt count), one call at a time, and hands the leases out in order, so under
 * load one call leases many jobs. When the queue had fewer jobs than takers, it waits for a change (an offer
 * anywhere, a release, a due delayed job) or the recheck, every quarter of a lease at most every second, as
 * expired leases of other consumers become claimable without any change.
 *
 * The wait for a reply can be interrupted (a Redis that hangs must not hold up a shutdown): the leases of a
 * reply that comes after that, and a lease no taker is left to take, go back to the queue at once. When Redis
 * is unreachable every taker in line fails, and each decides when to try again; when the fetcher stops, they
 * fail with "the queue is closed". A retried take may leave a lease nobody holds (it expires and the job is
 * taken over, one attempt spent).
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type { JobQueue } from "keel/services"
import { type Calls, unavailable, withRetries } from "./calls.js"
import { warnDropped } from "./deadLetters.js"
import { grant, leaseFields } from "./lease.js"
import { maxBatch, type Settings } from "./settings.js"
import { changeSince, type State } from "./state.js"

/**
 * Serves the takers in line: as many jobs as they are (at most `maxBatch`) in one call; when the queue had
 * fewer, it waits for a change (an offer anywhere, a release, a due delayed job) or the recheck, as expired
 * leases of other consumers become claimable without any change. `releaseInBackground` gives a lease back.
 */
export const fetcher = (
  state: State,
  { ensureGroup, runScript }: Calls,
  settings: Settings,
  releaseInBackground: (lease: JobQueue.Lease) => void
) => {
  const { consumer, group, keys, leaseMillis, maxDeliveries, maxDeadLetters, recheck, recheckMillis } = settings
  const { metrics } = settings
  const warn = warnDropped(settings)

  /** Hands the leases to the takers in line; a lease no one is left to take goes back to the queue. */
  const handOut = (leases: ReadonlyArray<JobQueue.Lease>) => {
    for (const lease of leases) {
      const taker = state.takers.values().next().value
      if (taker === undefined) {
        releaseInBackground(lease)
        continue
      }
      state.takers.delete(taker)
      taker.lease = lease
      taker.resume(Effect.succeed(lease))
    }
  }

  /** Every taker in line fails with `error` (the queue is unreachable); each decides when to try again. */
  const failTakers = (error: JobQueue.QueueUnavailable) => {
    const failed = [...state.takers]
    state.takers.clear()
    for (const taker of failed) taker.resume(Effect.fail(error))
  }

  /** The leases a take script's reply grants, now held (and watched) by this queue; its takeovers are counted. */
  const leasesOf = (reply: ReadonlyArray<unknown>) => {
    metrics.countTakeovers(reply[2] as number)
    metrics.countDeadLettered(reply[3] as number)
    const leases: Array<JobQueue.Lease> = []
    for (let index = 4; index + leaseFields - 1 < reply.length; index += leaseFields) {
      leases.push(grant(state, consumer, reply.slice(index, index + leaseFields)))
    }
    return leases
  }

  // A reply that comes after the fetcher stopped waiting (the queue is closing): its leases go back at once.
  const releaseAbandoned = (reply: unknown) => {
    for (const lease of leasesOf(reply as ReadonlyArray<unknown>)) releaseInBackground(lease)
  }

  /** One take script call for `wanted` takers; the wait for its reply can be interrupted (see above). */
  const fetchOnce = (wanted: number) =>
    Effect.flatMap(Clock.currentTimeMillis, (at) => {
      const scan = at - state.lastFullScanAt >= recheckMillis
      const args = [group, consumer, leaseMillis, maxDeliveries, keys.job, at, maxDeadLetters, scan ? 1 : 0, wanted]
      return Effect.zipRight(ensureGroup, runScript("take", [keys.stream, keys.dead], args, releaseAbandoned)).pipe(
        Effect.flatMap((answer) => {
          const reply = answer as ReadonlyArray<unknown>
          if (scan && reply[1] === 0) state.lastFullScanAt = at
          const leases = leasesOf(reply)
          const dropped = reply[0] as ReadonlyArray<string>
          return dropped.length === 0 ? Effect.succeed(leases) : Effect.as(warn(dropped), leases)
        })
      )
    })

  return Effect.gen(function*() {
    while (true) {
      yield* state.takersWaiting.until(() => state.takers.size > 0)
      const seen = state.version
      const wanted = Math.min(state.takers.size, maxBatch)
      const fetched = yield* Effect.either(withRetries(fetchOnce(wanted)))
      if (fetched._tag === "Left") {
        failTakers(fetched.left)
        continue
      }
      handOut(fetched.right)
      if (fetched.right.length < wanted) yield* changeSince(state, seen, recheck)
    }
  }).pipe(Effect.ensuring(Effect.sync(() => failTakers(unavailable("take: the queue is closed")))))
}
