/**
 * The record of every job a job server accepted: `GET /jobs/:id` reads it, workers write its state changes.
 *
 * One contract, several backends (embedded memory now, Redis later), so it promises only what every backend
 * can keep: the store is bounded (a full store makes room by forgetting finished jobs, and says `StoreFull`
 * when nothing is finished), `create` is idempotent on the caller's key (a retried request gets back the job
 * it already created), and a terminal state is final (a late or duplicated worker write cannot revive a
 * finished job). Records are plain JSON values, so a distributed backend can store them as they are. How
 * long a record survives — the process, a restart, a machine — is for each backend to document.
 *
 * A backend that reaches its records over a network can lose them for a while: after its own bounded retries
 * every method then fails with `StoreUnavailable` (in bounded time, never hanging), so a caller can answer
 * "try again" instead of waiting. The embedded backend never fails that way.
 */
import { Context, Data } from "effect"
import type { Effect, Option } from "effect"

export type JobState =
  | { readonly _tag: "Queued" }
  | { readonly _tag: "Running"; readonly attempt: number }
  | { readonly _tag: "Completed"; readonly result: unknown; readonly attempts: number }
  /** `error` is the rendered error chain, readable as it is. */
  | { readonly _tag: "Failed"; readonly error: string; readonly attempts: number }
  | { readonly _tag: "Unfinished"; readonly reason: string; readonly attempts: number }

/** Completed, Failed and Unfinished are terminal: once there, a record never changes again. */
export const isTerminal = (state: JobState): boolean =>
  state._tag === "Completed" || state._tag === "Failed" || state._tag === "Unfinished"

export interface JobRecord {
  readonly id: string
  readonly kind: string
  readonly idempotencyKey: string | undefined
  readonly state: JobState
  /** Clock millis. */
  readonly createdAt: number
  /** Clock millis of the last state change. */
  readonly updatedAt: number
}

/** The store holds `capacity` records and none of them is finished, so none can be forgotten. */
export class StoreFull extends Data.TaggedError("StoreFull")<{
  readonly capacity: number
}> {
  override get message() {
    return `job store full (capacity ${this.capacity}) and no finished job to evict`
  }
}

/** The backend could not reach its records (after its own bounded retries); nothing is known to have changed. */
export class StoreUnavailable extends Data.TaggedError("StoreUnavailable")<{
  readonly reason: string
}> {
  override get message() {
    return `job store unavailable: ${this.reason}`
  }
}

export interface JobStoreService {
  /**
   * Creates a Queued record. With an idempotencyKey already held by a stored record, creates nothing and
   * returns that record with created=false. Fails with StoreFull when the store is at capacity and no finished
   * record can be evicted. An id already present: die (programming error).
   */
  readonly create: (job: {
    readonly id: string
    readonly kind: string
    readonly idempotencyKey?: string
  }) => Effect.Effect<{ readonly record: JobRecord; readonly created: boolean }, StoreFull | StoreUnavailable>
  /**
   * Sets the state (and updatedAt); unknown ids are ignored (the record may have been evicted). A terminal
   * record is never changed again: a late Running (or a second outcome) after Completed is ignored.
   */
  readonly update: (id: string, state: JobState) => Effect.Effect<void, StoreUnavailable>
  /** Forgets a record (and its idempotency key) — used when a job was recorded but then refused by the queue. */
  readonly remove: (id: string) => Effect.Effect<void, StoreUnavailable>
  readonly get: (id: string) => Effect.Effect<Option.Option<JobRecord>, StoreUnavailable>
  /** Records held now, by state tag, and the capacity. */
  readonly stats: Effect.Effect<{
    readonly size: number
    readonly capacity: number
    readonly byState: Readonly<Record<JobState["_tag"], number>>
  }, StoreUnavailable>
}

export class JobStore extends Context.Tag("keel/JobStore")<JobStore, JobStoreService>() {}
