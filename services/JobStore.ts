/**
 * The record of every job a job server accepted: `GET /jobs/:id` reads it, workers write its state changes.
 *
 * One contract, several backends (embedded in keel/memory, on Redis in keel/redis), so it promises only what
 * every backend can keep: the store is bounded (a full store makes room by forgetting finished jobs, and says
 * `StoreFull` when nothing is finished), `create` is idempotent on the caller's key (a retried request gets
 * back the job it already created), and a terminal state is final (a late or duplicated worker write cannot
 * revive a finished job). Records are plain JSON values, so a distributed backend can store them as they are.
 * How long a record survives — the process, a restart, a machine — is for each backend to document.
 *
 * A backend that reaches its records over a network can lose them for a while: after its own bounded retries
 * every method then fails with `StoreUnavailable` (in bounded time, never hanging), so a caller can answer
 * "try again" instead of waiting. The embedded backend never fails that way.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import { StoreFull, StoreUnavailable } from "keel"

/** The store's errors, defined with Keel's other rejections (each declares its HTTP answer). */
export { StoreFull, StoreUnavailable }

/**
 * Where a job is in its life: `Queued`, then `Running` (once per attempt), then one terminal state —
 * `Completed`, `Failed` or `Unfinished` — after which its record never changes again (see `isTerminal`).
 */
export type JobState =
  | {
    /** Accepted and waiting for a worker: the state `create` gives a record. */
    readonly _tag: "Queued"
  }
  | {
    /** A worker is running the job. */
    readonly _tag: "Running"
    /** Which attempt is running, from 1. */
    readonly attempt: number
  }
  | {
    /** The job succeeded. Terminal. */
    readonly _tag: "Completed"
    /**
     * What the job returned. It should be a JSON value: a distributed backend gives back
     * `JSON.parse(JSON.stringify(result))`.
     */
    readonly result: unknown
    /** Attempts the job took, the successful one included. */
    readonly attempts: number
  }
  | {
    /** The job failed and will not be tried again. Terminal. */
    readonly _tag: "Failed"
    /** Why: the rendered error chain, readable as it is. */
    readonly error: string
    /** Attempts made before the job was given up. */
    readonly attempts: number
  }
  | {
    /** The job ended with no outcome: it was stopped (e.g. interrupted at a shutdown) or never started. Terminal. */
    readonly _tag: "Unfinished"
    /** Why it did not finish, readable as it is. */
    readonly reason: string
    /** Attempts started before it was stopped (0 when it never started). */
    readonly attempts: number
  }

/** Completed, Failed and Unfinished are terminal: once there, a record never changes again. */
export const isTerminal = (state: JobState): boolean =>
  state._tag === "Completed" || state._tag === "Failed" || state._tag === "Unfinished"

/** What the store holds of one job: who it is and where it is now. A plain JSON value. */
export interface JobRecord {
  /** The job's id, as given to `create`; unique in the store. */
  readonly id: string
  /** The job's kind, as given to `create`: what the application runs it as. */
  readonly kind: string
  /**
   * The key given to `create`, or undefined when none was. While the record is held, a `create` with the
   * same key returns this record instead of creating one.
   */
  readonly idempotencyKey: string | undefined
  /** Where the job is now; final once terminal. */
  readonly state: JobState
  /** Clock millis when the record was created. */
  readonly createdAt: number
  /** Clock millis of the last state change. */
  readonly updatedAt: number
}



/**
 * The JobStore contract: what every backend's store offers (`MemoryJobStore` in keel/memory, `RedisJobStore`
 * in keel/redis). Reach it through the `JobStore` tag. Every method of a networked backend may fail with
 * `StoreUnavailable`; the embedded one never does.
 */
export interface JobStoreService {
  /**
   * Creates a Queued record. With an `idempotencyKey` already held by a stored record, creates nothing and
   * returns that record with `created: false`. Fails with `StoreFull` when the store is at capacity and no
   * finished record can be evicted (else the one that finished earliest is forgotten to make room). An id
   * already stored is a defect: the effect dies.
   */
  readonly create: (job: {
    /** The new job's id; it must not be stored already. */
    readonly id: string
    /** The job's kind, kept in the record. */
    readonly kind: string
    /** The caller's key for this job (e.g. a request's idempotency key). Default: none. */
    readonly idempotencyKey?: string
  }) => Effect.Effect<{
    /** The record created, or the one that already held the key. */
    readonly record: JobRecord
    /** True when this call created `record`; false when the key was already held. */
    readonly created: boolean
  }, StoreFull | StoreUnavailable>
  /**
   * Sets the state (and updatedAt); unknown ids are ignored (the record may have been evicted). A terminal
   * record is never changed again: a late Running (or a second outcome) after Completed is ignored.
   */
  readonly update: (id: string, state: JobState) => Effect.Effect<void, StoreUnavailable>
  /** Forgets a record (and its idempotency key) — used when a job was recorded but then refused by the queue. */
  readonly remove: (id: string) => Effect.Effect<void, StoreUnavailable>
  /** The record of job `id`, or `None` when the store does not hold it (never created, removed or evicted). */
  readonly get: (id: string) => Effect.Effect<Option.Option<JobRecord>, StoreUnavailable>
  /** Records held now, by state tag, and the capacity. */
  readonly stats: Effect.Effect<{
    /** Records held now, in all states. */
    readonly size: number
    /** The most records the store holds at once. */
    readonly capacity: number
    /** Records held now, by their state's `_tag`. */
    readonly byState: Readonly<Record<JobState["_tag"], number>>
  }, StoreUnavailable>
}

/**
 * The tag of the `JobStoreService`: an Effect that needs the job records asks for it here, and a backend's
 * `layer` provides it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { MemoryJobStore } from "keel/memory"
 * import { JobStore } from "keel/services"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* JobStore.JobStore
 *   const { record } = yield* store.create({ id: "job-1", kind: "email", idempotencyKey: "request-42" })
 *   yield* store.update(record.id, { _tag: "Running", attempt: 1 })
 *   yield* store.update(record.id, { _tag: "Completed", result: { sent: true }, attempts: 1 })
 *   return yield* store.get(record.id)
 * }).pipe(Effect.provide(MemoryJobStore.layer({ capacity: 10_000 })))
 * ```
 */
export class JobStore extends Context.Tag("keel/JobStore")<JobStore, JobStoreService>() {}
