/**
 * The embedded JobStore: job records in a Map inside the process. It survives nothing beyond the process —
 * after a restart every record (and every idempotency key) is gone — which is the right default for one
 * process and for tests, not for jobs that must be looked up across restarts.
 *
 * It is bounded by `capacity`. A full store makes room by evicting the record that *finished* earliest
 * (not the one created earliest: a long-running job is still wanted by whoever polls it), so terminal
 * records are linked into a list in the order they became terminal, and eviction unlinks its head in O(1)
 * (a JS Set or Map would not do: finding its first entry after many deletes scans the holes they left).
 * When no record is terminal, there is nothing safe to forget and `create` fails with `StoreFull`. Each
 * operation is one synchronous block (the Clock read included), so under JS's single thread each is atomic.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Validation from "#keel/internal/Validation"
import { JobStore } from "keel/services"

/** Options of `make` and `layer`. */
export interface Options {
  /** The most records held at once; a positive integer. A full store evicts the record that finished earliest. */
  readonly capacity: number
}

type StateTag = JobStore.JobState["_tag"]
type Created = Effect.Effect.Success<ReturnType<JobStore.JobStoreService["create"]>>

/**
 * A new, empty store in this process's memory; each call makes a separate one. Dies when `capacity` is not a
 * positive integer. Its methods never fail with `StoreUnavailable`.
 */
export const make = (options: Options): Effect.Effect<JobStore.JobStoreService> =>
  Effect.suspend(() => {
    const { capacity } = options
    return Effect.as(
      Validation.validate("MemoryJobStore.make", [
        ["capacity", capacity, Validation.isIntegerFrom(capacity, 1), Validation.integerFrom(1)]
      ]),
      unsafeMake(capacity)
    )
  })

/**
 * The store as the `JobStore` service (each build of the layer is a new, empty store).
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { MemoryJobStore } from "keel/memory"
 * import { JobStore } from "keel/services"
 *
 * const stateOf = (id: string) =>
 *   Effect.flatMap(JobStore.JobStore, (store) => store.get(id)).pipe(
 *     Effect.map(Option.map((record) => record.state._tag))
 *   )
 *
 * const program = stateOf("job-1").pipe(Effect.provide(MemoryJobStore.layer({ capacity: 10_000 })))
 * ```
 */
export const layer = (options: Options): Layer.Layer<JobStore.JobStore> => Layer.effect(JobStore.JobStore, make(options))

/** A stored record, linked into the "finished" list once its state is terminal. */
interface Slot {
  record: JobStore.JobRecord
  finishedBefore: Slot | undefined
  finishedAfter: Slot | undefined
}

const unsafeMake = (capacity: number): JobStore.JobStoreService => {
  const slots = new Map<string, Slot>()
  const idByKey = new Map<string, string>()
  /** Terminal records, oldest first, in the order they became terminal: eviction takes the first. */
  let firstFinished: Slot | undefined
  let lastFinished: Slot | undefined
  const counts: Record<StateTag, number> = { Queued: 0, Running: 0, Completed: 0, Failed: 0, Unfinished: 0 }

  const appendFinished = (slot: Slot) => {
    slot.finishedBefore = lastFinished
    slot.finishedAfter = undefined
    if (lastFinished === undefined) firstFinished = slot
    else lastFinished.finishedAfter = slot
    lastFinished = slot
  }

  const unlinkFinished = (slot: Slot) => {
    if (slot.finishedBefore === undefined) firstFinished = slot.finishedAfter
    else slot.finishedBefore.finishedAfter = slot.finishedAfter
    if (slot.finishedAfter === undefined) lastFinished = slot.finishedBefore
    else slot.finishedAfter.finishedBefore = slot.finishedBefore
    slot.finishedBefore = slot.finishedAfter = undefined
  }

  const forget = (slot: Slot) => {
    const { record } = slot
    slots.delete(record.id)
    if (JobStore.isTerminal(record.state)) unlinkFinished(slot)
    counts[record.state._tag]--
    if (record.idempotencyKey !== undefined && idByKey.get(record.idempotencyKey) === record.id) {
      idByKey.delete(record.idempotencyKey)
    }
  }

  const create: JobStore.JobStoreService["create"] = (job) =>
    Effect.clockWith((clock) =>
      Effect.suspend((): Effect.Effect<Created, JobStore.StoreFull> => {
        const idempotencyKey = job.idempotencyKey
        if (idempotencyKey !== undefined) {
          const heldBy = idByKey.get(idempotencyKey)
          if (heldBy !== undefined) return Effect.succeed({ record: slots.get(heldBy)!.record, created: false })
        }
        if (slots.has(job.id)) {
          return Effect.dieMessage(`MemoryJobStore: a job with id ${JSON.stringify(job.id)} is already stored`)
        }
        if (slots.size >= capacity) {
          if (firstFinished === undefined) return Effect.fail(new JobStore.StoreFull({ capacity }))
          forget(firstFinished)
        }
        const now = clock.unsafeCurrentTimeMillis()
        const record: JobStore.JobRecord = {
          id: job.id,
          kind: job.kind,
          idempotencyKey,
          state: { _tag: "Queued" },
          createdAt: now,
          updatedAt: now
        }
        slots.set(record.id, { record, finishedBefore: undefined, finishedAfter: undefined })
        if (idempotencyKey !== undefined) idByKey.set(idempotencyKey, record.id)
        counts.Queued++
        return Effect.succeed({ record, created: true })
      })
    )

  const update: JobStore.JobStoreService["update"] = (id, state) =>
    Effect.clockWith((clock) =>
      Effect.sync(() => {
        const slot = slots.get(id)
        if (slot === undefined || JobStore.isTerminal(slot.record.state)) return
        counts[slot.record.state._tag]--
        counts[state._tag]++
        slot.record = { ...slot.record, state, updatedAt: clock.unsafeCurrentTimeMillis() }
        if (JobStore.isTerminal(state)) appendFinished(slot)
      })
    )

  const remove: JobStore.JobStoreService["remove"] = (id) =>
    Effect.sync(() => {
      const slot = slots.get(id)
      if (slot !== undefined) forget(slot)
    })

  const get: JobStore.JobStoreService["get"] = (id) =>
    Effect.sync(() => Option.map(Option.fromNullable(slots.get(id)), (slot) => slot.record))

  const stats: JobStore.JobStoreService["stats"] = Effect.sync(() => ({
    size: slots.size,
    capacity,
    byState: { ...counts }
  }))

  return { create, update, remove, get, stats }
}
