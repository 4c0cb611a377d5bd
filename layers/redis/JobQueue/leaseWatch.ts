/**
 * The lease watch: one fiber per queue that finds the leases this process holds but has lost, because their
 * lease expired and another consumer (or this one, on a later delivery) took the job over. Nothing in Redis
 * tells the old holder, so it asks: every third of a lease, the job hashes of all granted leases in one
 * pipelined round trip. A lost lease's `lost` completes, which lets its runner stop the job, so that two runs
 * of a job never overlap for long. A lease being settled is left alone: the settle's answer decides.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { Redis } from "ioredis"
import type { Calls } from "./calls.js"
import { held } from "./lease.js"
import type { Settings } from "./settings.js"
import type { State } from "./state.js"

/**
 * Completes `lost` of every granted lease whose job is no longer leased by it (its lease expired and someone
 * took the job over): all granted leases are read in one pipelined round trip, every third of a lease.
 */
export const leaseWatch = (state: State, { attempt }: Calls, { keys, leaseMillis }: Settings, client: Redis) =>
  Effect.gen(function*() {
    while (true) {
      yield* Effect.sleep(Duration.millis(Math.max(10, Math.floor(leaseMillis / 3))))
      const watched = [...state.granted].filter((lease) => {
        const leaseState = held.get(lease)!
        if (leaseState.settled) state.granted.delete(lease)
        return !leaseState.settled && leaseState.settling === 0
      })
      if (watched.length === 0) continue
      const replies = yield* Effect.option(attempt("HMGET", () => {
        const pipeline = client.pipeline()
        for (const lease of watched) pipeline.hmget(keys.job + lease.id, "state", "entry", "attempts", "consumer")
        return pipeline.exec()
      }))
      if (Option.isNone(replies) || replies.value === null) continue
      for (let index = 0; index < watched.length; index++) {
        const lease = watched[index]!
        const leaseState = held.get(lease)!
        const [error, fields] = replies.value[index] ?? [null, null]
        if (error !== null || fields === null || leaseState.settling > 0 || leaseState.settled) continue
        const [jobState, entry, attempts, owner] = fields as ReadonlyArray<string | null>
        if (
          jobState !== "leased" || entry !== leaseState.entry || attempts !== String(lease.delivery) ||
          owner !== leaseState.consumer
        ) {
          leaseState.settled = true
          state.granted.delete(lease)
          leaseState.lost.fire()
        }
      }
    }
  })
