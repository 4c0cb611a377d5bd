/**
 * The distributed JobStore: the contract of services/JobStore.ts on Redis, so that every process of a job
 * server sharing one Redis answers `GET /jobs/:id` for jobs any of them accepted (same options and behaviour
 * as layers/memory/JobStore.ts: bounded by `capacity`, idempotent `create`, final terminal states).
 *
 * Guarantee: a record survives the process that wrote it — every store of the same name, in any process on
 * any machine, reads and updates it — for as long as Redis keeps its data (turn its persistence on to survive
 * a Redis restart). It is forgotten only by `remove`, or by eviction when a full store makes room.
 *
 * Redis structures, all under the prefix `keel:store:<name>:` (one Redis, not a Cluster: the scripts touch
 * record hashes whose names they compute):
 * - `job:<id>`: a hash per record: `kind`, `key` (the idempotency key, only when there is one), `tag` (the
 *   state's `_tag`, which the scripts read), `state` (the whole JobState as JSON text, result included, which
 *   no script parses, so a result comes back as `JSON.parse(JSON.stringify(result))`), `createdAt`,
 *   `updatedAt`, and `token` (which `create` call wrote it).
 * - `keys`: a hash from idempotency key to the id of the record holding it.
 * - `finished`: a sorted set of the ids of terminal records, scored by the counter `sequence` in the order
 *   they became terminal; a full store evicts its first member (the earliest *finished*, as in memory).
 * - `counts`: a hash of how many records are held in each state; their sum is the store's size.
 *
 * Every change is one Lua script (below, each with its comment), so that a record, its key, its place in
 * `finished` and the counts never disagree, whichever processes write at once. `get` and `stats` are single
 * HMGETs, atomic by themselves. Every store of one name should be made with the same `capacity`: each
 * enforces its own on `create`.
 *
 * Time: `createdAt` and `updatedAt` come from the process's `Clock`, as in the memory store; eviction order
 * is the `sequence` counter, so Redis's clock decides nothing.
 *
 * Failures: each Redis call is bounded by `callTimeout` of real time and tried 3 times, with `Backoff` (on
 * the Clock) between tries; then the method fails with `StoreUnavailable`. It never hangs: under 6.5 s
 * against a Redis that does not answer, well under a second against one that refuses connections — so the
 * job server answers 503 with Retry-After. A connection this module opens does not keep commands queued
 * while Redis is away (`maxRetriesPerRequest: 0`). A retried call may have run once already, which is
 * harmless: `update` writes the same state and `updatedAt` again (read from the Clock once, before the first
 * try) or finds it terminal, `remove` forgets nothing more, and `create` recognises the record its own
 * earlier try wrote by its token and answers `created: true` — never a second record, and never
 * `created: false` to the caller who created it. A state that is not JSON (a BigInt, a cycle) is a defect.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Redis } from "ioredis"
import { Backoff } from "keel"
import { JobStore } from "keel/services"
import { randomUUID } from "node:crypto"
import { retryAfterFailure } from "#keel/internal/retryAfterFailure"
import { call, callTimeout, describeError, evalScript, isClient, open, quit, script } from "./Connection.js"
import * as Validation from "#keel/internal/Validation"

/** Options of `make` and `layer`. */
export interface Options {
  /** An ioredis client the caller owns (left open when the store closes), or the URL of a Redis to connect to. */
  readonly redis: Redis | {
    /** The Redis to connect to, as ioredis takes it: `redis://[[user]:password@]host[:port][/db]`. */
    readonly url: string
  }
  /** The store's name: its keys are `keel:store:<name>:…`. Stores with the same name share their records. */
  readonly name: string
  /**
   * The most records held at once; a positive integer. Every store of one name should be given the same: each
   * enforces its own on `create`.
   */
  readonly capacity: number
}

const attempts = 3
/** Retries of a failed Redis call before `StoreUnavailable`. */
const retryPolicy = Backoff.exponential<JobStore.StoreUnavailable>({
  base: Duration.millis(100),
  max: Duration.seconds(1),
  maxAttempts: attempts,
  retryOn: () => true
})

type StateTag = JobStore.JobState["_tag"]
const stateTags: ReadonlyArray<StateTag> = ["Queued", "Running", "Completed", "Failed", "Unfinished"]
/** The fields of a record hash that make its JobRecord, in the order the scripts and `get` return them. */
const recordFields = ["kind", "key", "state", "createdAt", "updatedAt"] as const
const queuedState = JSON.stringify({ _tag: "Queued" } satisfies JobStore.JobState)

// ---------------------------------------------------------------------------------------------------------
// Lua scripts. Each runs atomically in Redis; together they are every change of the store.

/** Shared by the scripts: which tags are terminal, the store's size, and forgetting one record. */
const prelude = `
local terminal = { Completed = true, Failed = true, Unfinished = true }
local function size(counts)
  local total = 0
  for _, count in ipairs(redis.call('HMGET', counts, 'Queued', 'Running', 'Completed', 'Failed', 'Unfinished')) do
    total = total + (tonumber(count) or 0)
  end
  return total
end
-- The record, its place in finished, its count, and its idempotency key if the key still points at it.
local function forget(prefix, keys, finished, counts, id)
  redis.call('ZREM', finished, id)
  local fields = redis.call('HMGET', prefix .. id, 'tag', 'key')
  if not fields[1] then return end
  redis.call('DEL', prefix .. id)
  redis.call('HINCRBY', counts, fields[1], -1)
  if fields[2] and redis.call('HGET', keys, fields[2]) == id then redis.call('HDEL', keys, fields[2]) end
end
`

/**
 * create — KEYS: keys, finished, counts, record hash; ARGV: prefix, id, kind, hasKey ('1' | '0'), key,
 * token, now, capacity, queued state (JSON).
 * A key held by a stored record: that record, 'held'. Then the id: held by this call's own earlier try (same
 * token) it is that record, 'created'; held otherwise, 'duplicate'. Then room: while the store is at capacity
 * the earliest finished record is forgotten, and with none left, 'full'. Then the Queued record, its key and
 * its count: 'created'. One script, because the key lookup and the write must not interleave with another
 * process's create of the same key (that would make two records for one key), nor the room check with
 * another create (that would overfill the store). Replies { status, id, kind, key, state, createdAt,
 * updatedAt }.
 */
const createScript = prelude + `
local keys, finished, counts, job = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, id, hasKey, key, token, now = ARGV[1], ARGV[2], ARGV[4] == '1', ARGV[5], ARGV[6], ARGV[7]
local function answer(holder)
  local fields = redis.call('HMGET', prefix .. holder, 'kind', 'key', 'state', 'createdAt', 'updatedAt', 'token')
  local status = 'held'
  if fields[6] == token then status = 'created' end
  return { status, holder, fields[1], fields[2], fields[3], fields[4], fields[5] }
end
if hasKey then
  local heldBy = redis.call('HGET', keys, key)
  if heldBy and redis.call('EXISTS', prefix .. heldBy) == 1 then return answer(heldBy) end
end
local writer = redis.call('HGET', job, 'token')
if writer == token then return answer(id) end
if writer then return { 'duplicate' } end
while size(counts) >= tonumber(ARGV[8]) do
  local earliest = redis.call('ZRANGE', finished, 0, 0)[1]
  if not earliest then return { 'full' } end
  forget(prefix, keys, finished, counts, earliest)
end
redis.call('HSET', job, 'kind', ARGV[3], 'tag', 'Queued', 'state', ARGV[9], 'createdAt', now, 'updatedAt', now, 'token', token)
if hasKey then
  redis.call('HSET', job, 'key', key)
  redis.call('HSET', keys, key, id)
end
redis.call('HINCRBY', counts, 'Queued', 1)
return answer(id)
`

/**
 * update — KEYS: record hash, finished, counts, sequence; ARGV: id, tag, state (JSON), updatedAt.
 * Nothing for an unknown id or a terminal record. Otherwise the state, its counts, and — for a terminal
 * state — the record's place at the end of `finished`. One script, because the terminal check and the write
 * must not interleave with another writer's (two outcomes, or a late Running after an outcome, would both
 * land), and the counts must move with the state.
 */
const updateScript = prelude + `
local previous = redis.call('HGET', KEYS[1], 'tag')
if not previous or terminal[previous] then return 0 end
redis.call('HSET', KEYS[1], 'tag', ARGV[2], 'state', ARGV[3], 'updatedAt', ARGV[4])
redis.call('HINCRBY', KEYS[3], previous, -1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
if terminal[ARGV[2]] then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1]) end
return 1
`

/**
 * remove — KEYS: keys, finished, counts; ARGV: prefix, id.
 * Forgets the record with its key, place and count in one step: a record without its key, or a key without
 * its record, would let a create see a half-removed job.
 */
const removeScript = prelude + `
forget(ARGV[1], KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return 0
`

const scripts = { create: script(createScript), update: script(updateScript), remove: script(removeScript) }

// ---------------------------------------------------------------------------------------------------------

const unavailable = (reason: string) => new JobStore.StoreUnavailable({ reason })

/** One try of a Redis request (Connection.call): its reply, or `StoreUnavailable` after `callTimeout`. */
const once = <A>(what: string, send: () => Promise<A>) => call(what, send, { timeout: callTimeout, fail: unavailable })

/** A Redis request, tried up to `attempts` times (Backoff between tries), then `StoreUnavailable`. */
const request = <A>(what: string, send: () => Promise<A>): Effect.Effect<A, JobStore.StoreUnavailable> =>
  retryAfterFailure(once(what, send), retryPolicy).pipe(
    Effect.mapError((error) => unavailable(`${error.reason} (${attempts} attempts)`))
  )

/** The store's own connection, closed with the Scope (within Connection's bound). */
const connect = (url: string) =>
  Effect.acquireRelease(Effect.sync(() => open(url, { enableAutoPipelining: true })), (connection) => quit(connection))

/**
 * A store on Redis, living as long as the current Scope, which closes the connection it opened (within 500 ms;
 * a caller's client is left open). The records stay in Redis. Dies when `capacity` is not a positive integer
 * or `name` is empty. Making it sends nothing to Redis; while Redis is away, methods fail with
 * `StoreUnavailable`.
 */
export const make = (options: Options): Effect.Effect<JobStore.JobStoreService, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { capacity, name } = options
    yield* Validation.validate("RedisJobStore.make", [
      ["capacity", capacity, Validation.isIntegerFrom(capacity, 1), Validation.integerFrom(1)],
      ["name", name, name !== "", "a non-empty string"]
    ])
    const prefix = `keel:store:${name}:`
    const keys = {
      ids: `${prefix}keys`,
      finished: `${prefix}finished`,
      counts: `${prefix}counts`,
      sequence: `${prefix}sequence`,
      job: `${prefix}job:`
    }
    const client = isClient(options.redis) ? options.redis : yield* connect(options.redis.url)

    const run = (which: keyof typeof scripts, keyList: ReadonlyArray<string>, args: ReadonlyArray<string | number>) =>
      request(which, () => evalScript(client, scripts[which], keyList, args))

    /** Encodes a state, dying on one that is not JSON (the contract's records are JSON values). */
    const stateText = (id: string, state: JobStore.JobState) =>
      Effect.try({
        try: () => JSON.stringify(state),
        catch: (error) => new Error(`RedisJobStore: the state of job ${JSON.stringify(id)} is not JSON: ${describeError(error)}`)
      }).pipe(Effect.orDie)

    const recordOf = (id: string, fields: ReadonlyArray<string | null>): JobStore.JobRecord => {
      const [kind, key, state, createdAt, updatedAt] = fields
      return {
        id,
        kind: kind ?? "",
        idempotencyKey: key ?? undefined,
        state: JSON.parse(state!) as JobStore.JobState,
        createdAt: Number(createdAt),
        updatedAt: Number(updatedAt)
      }
    }

    const create: JobStore.JobStoreService["create"] = (job) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const key = job.idempotencyKey
        const reply = (yield* run("create", [keys.ids, keys.finished, keys.counts, keys.job + job.id], [
          keys.job,
          job.id,
          job.kind,
          key === undefined ? "0" : "1",
          key ?? "",
          randomUUID(),
          now,
          capacity,
          queuedState
        ])) as ReadonlyArray<string | null>
        const [status, id, ...fields] = reply
        if (status === "full") return yield* new JobStore.StoreFull({ capacity })
        if (status === "duplicate") {
          return yield* Effect.dieMessage(`RedisJobStore: a job with id ${JSON.stringify(job.id)} is already stored`)
        }
        return { record: recordOf(id!, fields), created: status === "created" }
      })

    const update: JobStore.JobStoreService["update"] = (id, state) =>
      Effect.gen(function*() {
        const text = yield* stateText(id, state)
        const now = yield* Clock.currentTimeMillis
        yield* run("update", [keys.job + id, keys.finished, keys.counts, keys.sequence], [id, state._tag, text, now])
      })

    const remove: JobStore.JobStoreService["remove"] = (id) =>
      Effect.asVoid(run("remove", [keys.ids, keys.finished, keys.counts], [keys.job, id]))

    const get: JobStore.JobStoreService["get"] = (id) =>
      Effect.map(
        request("HMGET record", () => client.hmget(keys.job + id, ...recordFields)),
        (fields) => fields[2] === null ? Option.none() : Option.some(recordOf(id, fields))
      )

    const stats: JobStore.JobStoreService["stats"] = Effect.map(
      request("HMGET counts", () => client.hmget(keys.counts, ...stateTags)),
      (counts) => {
        const byState = { Queued: 0, Running: 0, Completed: 0, Failed: 0, Unfinished: 0 }
        stateTags.forEach((tag, index) => byState[tag] = Number(counts[index] ?? 0))
        return { size: stateTags.reduce((size, tag) => size + byState[tag], 0), capacity, byState }
      }
    )

    return { create, update, remove, get, stats }
  })

/**
 * The store as the `JobStore` service, living as long as the layer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RedisJobStore } from "keel/redis"
 * import { JobStore } from "keel/services"
 *
 * const JobStoreLive = RedisJobStore.layer({
 *   redis: { url: "redis://localhost:6379" },
 *   name: "jobs",
 *   capacity: 100_000
 * })
 *
 * const program = Effect.flatMap(JobStore.JobStore, (store) => store.stats).pipe(Effect.provide(JobStoreLive))
 * ```
 */
export const layer = (options: Options): Layer.Layer<JobStore.JobStore> => Layer.scoped(JobStore.JobStore, make(options))
