/**
 * Settling a lease: renew, release, nack and dead-letter each run the settle script at once; acks wait in line
 * for the acker (acker.ts), which sends all that are waiting in one call. Every settle is refused in Redis
 * (`LeaseLost`) unless the job is still leased by this very lease, and while one is in flight the lease watch
 * does not judge the lease. A retried settle may report `LeaseLost` for a lease its first try did settle.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type { JobQueue } from "keel/services"
import { type Calls, unavailable, withRetries } from "./calls.js"
import { warnDropped } from "./deadLetters.js"
import { concluded, held, lostOf } from "./lease.js"
import type { Settings } from "./settings.js"
import type { Held, State } from "./state.js"

/** What a settle does (see scripts/settle.lua); all but `renew` end the lease. */
export type Action = "renew" | "release" | "nack" | "dead"

/** The settles of the queue with `state` and `settings`. */
export const makeSettle = (state: State, { once }: Calls, settings: Settings) => {
  const { group, keys, maxDeliveries, maxDeadLetters, metrics } = settings
  const warn = warnDropped(settings)

  const settleOnce = (lease: JobQueue.Lease, leaseState: Held, action: Action, delayMillis: number, reason: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (at) =>
      once("settle", [keys.stream, keys.delayed, keys.dead, keys.job + lease.id], [
        group,
        leaseState.consumer,
        leaseState.entry,
        lease.delivery,
        action,
        delayMillis,
        reason,
        at,
        maxDeliveries,
        maxDeadLetters,
        lease.id,
        keys.job
      ]))

  /** Runs `action` on `lease` in Redis (tried 3 times in all), and records the answer. */
  const settle = (lease: JobQueue.Lease, action: Action, delayMillis = 0, reason = "") =>
    Effect.suspend(() => {
      const leaseState = held.get(lease)
      if (leaseState === undefined || leaseState.settled) return Effect.fail(lostOf(lease))
      leaseState.settling++
      return withRetries(settleOnce(lease, leaseState, action, delayMillis, reason)).pipe(
        Effect.ensuring(Effect.sync(() => void leaseState.settling--)),
        Effect.flatMap((reply) => {
          const [status, dropped] = reply as [string, string | null | undefined]
          if (!concluded(state, lease, leaseState, status, action !== "renew")) return Effect.fail(lostOf(lease))
          if (status === "dead") metrics.countDeadLettered(1)
          return typeof dropped === "string" ? warn([dropped]) : Effect.void
        })
      )
    })

  /**
   * Released unsettled when the taker's Scope closes: ready again at once. Failures are dropped: the lease then
   * expires and is taken over.
   */
  const release = (lease: JobQueue.Lease) =>
    Effect.suspend(() => {
      const leaseState = held.get(lease)
      return leaseState === undefined || leaseState.settled ? Effect.void : Effect.ignore(settle(lease, "release"))
    })

  /** Joins the line of acks for the acker, which answers with Redis's verdict. */
  const ack = (lease: JobQueue.Lease) =>
    Effect.suspend(() => {
      const leaseState = held.get(lease)
      if (leaseState === undefined || leaseState.settled) return Effect.fail(lostOf(lease))
      if (state.closed) return Effect.fail(unavailable("ack: the queue is closed"))
      leaseState.settling++
      return Effect.async<void, JobQueue.QueueUnavailable | JobQueue.LeaseLost>((resume) => {
        state.pendingAcks.push({ lease, state: leaseState, resume })
        state.acksWaiting.wake()
      })
    })

  return { settle, release, ack }
}
