/**
 * Offering a job. The offer script adds the job unless the queue holds its id already (then nothing changes:
 * offers are idempotent by id, and the id is chosen before the first try, so a retried offer is safe) or is at
 * capacity. At capacity, `offer` waits for room and tries again: room is made by takers in this process (a
 * change it sees at once) and in others (seen by trying again every `offerRecheck`); `tryOffer` fails with
 * `QueueFull` instead.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { Propagation, QueueFull } from "keel"
import { JobQueue } from "keel/services"
import { randomUUID } from "node:crypto"
import type { Calls } from "./calls.js"
import { delayMillisOf, type Settings } from "./settings.js"
import { bump, changeSince, type State } from "./state.js"

/** How often offers waiting for room try again, as room is made by takers in other processes. */
export const offerRecheck = Duration.millis(50)

/** The service's `offer` and `tryOffer` for the queue with `state` and `settings`; ids it makes are `job-<uuid>`. */
export const makeOffer = (state: State, { run }: Calls, { capacity, group, keys, name }: Settings) => {
  type Prepared = ReturnType<typeof prepare>

  const offerOnce = (job: Prepared) =>
    Effect.flatMap(Clock.currentTimeMillis, (enqueuedAt) =>
      run("offer", [keys.stream, keys.delayed, keys.job + job.id], [
        group,
        job.id,
        job.payload,
        enqueuedAt,
        job.delayMillis,
        capacity,
        job.carried
      ])
    ).pipe(Effect.tap((status) => status === "added" ? Effect.sync(() => bump(state)) : Effect.void))

  const prepare = (
    payload: JobQueue.Json,
    offerOptions: JobQueue.OfferOptions | undefined,
    carried: Propagation.Carried | undefined
  ) => ({
    id: offerOptions?.id ?? `job-${randomUUID()}`,
    payload: JSON.stringify(payload),
    delayMillis: delayMillisOf(offerOptions?.delay),
    carried: Propagation.encode(carried)
  })

  const offer = (payload: JobQueue.Json, offerOptions?: JobQueue.OfferOptions) =>
    JobQueue.offerCarrying(name, offerOptions, (carried) => {
      const job = prepare(payload, offerOptions, carried)
      const loop: Effect.Effect<string, JobQueue.QueueUnavailable> = Effect.suspend(() => {
        const seen = state.version
        return Effect.flatMap(offerOnce(job), (status) =>
          status === "full" ? Effect.zipRight(changeSince(state, seen, offerRecheck), loop) : Effect.succeed(job.id))
      })
      return loop
    })

  const tryOffer = (payload: JobQueue.Json, offerOptions?: JobQueue.OfferOptions) =>
    JobQueue.offerCarrying(name, offerOptions, (carried) => {
      const job = prepare(payload, offerOptions, carried)
      return Effect.flatMap(offerOnce(job), (status) =>
        status === "full"
          ? Effect.fail(new QueueFull({ capacity }))
          : Effect.succeed(job.id))
    })

  return { offer, tryOffer }
}
