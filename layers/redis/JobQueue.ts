/**
 * The distributed JobQueue: the contract of services/JobQueue.ts on Redis Streams, so that several processes
 * on several machines share one queue's work (same options and behaviour as layers/memory/JobQueue.ts).
 *
 * Guarantee: at least once across processes and machines, for as long as Redis keeps its data (turn its
 * persistence on to survive a Redis restart). A process that dies holding leases loses nothing: its jobs are
 * taken over by another consumer once their lease has expired. Handlers must be idempotent. Ordering is FIFO
 * for one taker; across takers it is not guaranteed.
 *
 * Redis structures, all under the prefix `keel:jobs:<name>:` (one Redis, not a Cluster: the scripts touch
 * job hashes whose names they compute):
 * - `stream`: one entry `{ id }` per job that is ready or leased, in the consumer group `…:group`. A ready job
 *   is an entry not yet delivered to the group; a leased job is an entry in the group's pending entries list
 *   (PEL), owned by the consumer that took it, whose idle time is the age of its lease. Settled entries are
 *   acknowledged and deleted at once, so the stream holds only live jobs: ready = XLEN − pending.
 * - `job:<id>`: a hash with the job's `payload` (JSON text), `enqueuedAt`, `attempts` (deliveries so far, the
 *   source of truth for `attempt`), `state` (ready | delayed | leased | dead), its current stream `entry` and
 *   leasing `consumer`, and for a dead job its `reason` and `at`. It exists exactly as long as the queue holds
 *   the job, which is what makes `offer` idempotent by id. A lease is the pair (entry, attempts): every
 *   delivery changes it, so settling a lease someone else has taken over (even the same consumer) is refused.
 * - `delayed`: a sorted set of job ids scored by the Redis time (ms) at which they become ready.
 * - `dead`: a list of dead job ids, oldest first, at most `maxDeadLetters` long (past it the oldest is dropped
 *   with its hash, and a warning logged).
 *
 * Every change that touches more than one structure is one Lua script (below, each with its own comment), so
 * that no other consumer ever sees a job half moved and `depth` is exact. Reads that need no atomicity (the
 * lease watch, the wake-up read) are plain commands.
 *
 * Waiting. `take` does not block inside `XREADGROUP`: a blocked group read cannot be withdrawn, so a taker
 * interrupted while waiting would have its next job delivered to nobody (stuck in the PEL until its lease expired,
 * with one attempt spent). Instead one fiber per queue blocks on a dedicated connection in a plain `XREAD BLOCK`
 * (which takes nothing) and notes when an entry is added anywhere. Takers wait in line in the process; one
 * fetcher fiber runs the take script for as many of them as wait (its non-blocking `XREADGROUP` and `XAUTOCLAIM`
 * lease each job atomically with its attempt count) and hands the leases out in order, so under load one call
 * leases many jobs; when the queue has fewer, it waits for the next change. Likewise acks wait for one acker
 * fiber, which settles all that are waiting in one call. Every wait of a taker can be interrupted, and so can
 * the fetcher's wait for a reply (a Redis that hangs must not hold up a shutdown): a lease that arrives for a
 * taker no longer waiting is released at once, one that reaches its taker is bound to the taker's Scope. The
 * fetcher also re-checks every quarter of a lease, at most every second (expired leases of other consumers become
 * claimable without any entry being added), and offers waiting for room re-check every 50 ms (room is made by
 * takers in other processes).
 *
 * Time: Redis's clock decides idle times (lease expiry) and when delayed jobs are due, so all processes agree;
 * the process's `Clock` stamps `enqueuedAt` and dead letters' `at`, and paces the fibers.
 *
 * Failures: each Redis call is bounded in time (`callTimeout`) and retried with `Backoff` (3 attempts in all); then
 * the operation fails with `QueueUnavailable`. Connections this module opens do not keep commands queued across
 * reconnection attempts (`maxRetriesPerRequest: 0`, reconnecting at most every 500 ms). A retried call may have run once already: offers are safe (the
 * id is chosen before the first try), a take may then leave a lease nobody holds (it expires and the job is
 * taken over, one attempt spent), and a settle may report `LeaseLost` for a lease it did settle.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type { Redis } from "ioredis"
import { Backoff, QueueFull } from "keel"
import { JobQueue } from "keel/services"
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import * as Signal from "#keel/internal/Signal"
import * as Waiters from "#keel/internal/Waiters"
import {
  call,
  callTimeout,
  connectionOptions,
  describeError,
  evalScript,
  isClient,
  open,
  quiet,
  quit,
  quitWithinMillis,
  script
} from "./Connection.js"

/** Options of `make` and `layer`: the contract's, and how to reach Redis. */
export interface Options extends JobQueue.QueueOptions {
  /**
   * An ioredis client the caller owns (left open when the queue closes), or the URL of a Redis to connect to.
   * Either way the queue opens one more connection of its own, for its blocking reads.
   */
  readonly redis: Redis | {
    /** The Redis to connect to, as ioredis takes it: `redis://[[user]:password@]host[:port][/db]`. */
    readonly url: string
  }
  /** The queue's name: its keys are `keel:jobs:<name>:…`. Queues with the same name share their jobs. */
  readonly name: string
  /** This queue's consumer name in the group. Default: a fresh unique id per `make`. */
  readonly consumer?: string
}

/** A delay option in whole milliseconds (rounded up, so a job is never due early). */
const delayMillisOf = (delay: Duration.DurationInput | undefined) =>
  Math.max(0, Math.ceil(Duration.toMillis(Duration.decode(delay ?? Duration.zero))))
/** How long the wake-up read blocks in Redis; bounds how late shutdown finds it. */
const blockMillis = 1_000
/** How often, at most, waiting takers look for expired leases; how often offers look for room made elsewhere. */
const takerRecheck = Duration.seconds(1)
const offerRecheck = Duration.millis(50)
/** How often due delayed jobs are moved to the stream, at most. */
const promoteInterval = Duration.millis(50)
const promoteBatch = 100
/** At most this many jobs are leased, or acked, in one script call. */
const maxBatch = 100
/**
 * A Redis call is tried 3 times in all before `QueueUnavailable`: once, then again at once, then after a backoff.
 * The schedule is only built once a call has failed, as almost every call succeeds the first time.
 */
const retriesAfterFirstFailure = Backoff.exponential<JobQueue.QueueUnavailable>({
  base: Duration.millis(100),
  max: Duration.seconds(1),
  maxAttempts: 2,
  retryOn: () => true
})
const withRetries = <A, R>(call: Effect.Effect<A, JobQueue.QueueUnavailable, R>) =>
  Effect.catchAll(call, () => Effect.retry(call, retriesAfterFirstFailure))

// ---------------------------------------------------------------------------------------------------------
// Lua scripts. Each runs atomically in Redis; together they are every change of a job's state.

/** Shared by the scripts: Redis time in ms, and the move of a leased job to the dead letters. */
const prelude = `
local function nowMillis()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
-- A leased job's entry leaves the stream and the PEL; its hash stays, marked dead; the oldest dead letter
-- past maxDead is forgotten altogether. Returns the id dropped, or false.
local function kill(stream, group, dead, jobPrefix, id, entry, reason, at, maxDead)
  local job = jobPrefix .. id
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  redis.call('HSET', job, 'state', 'dead', 'reason', reason, 'at', at)
  redis.call('HDEL', job, 'entry', 'consumer')
  redis.call('RPUSH', dead, id)
  if redis.call('LLEN', dead) > tonumber(maxDead) then
    local dropped = redis.call('LPOP', dead)
    redis.call('DEL', jobPrefix .. dropped)
    return dropped
  end
  return false
end
`

/**
 * offer — KEYS: stream, delayed, job hash; ARGV: group, id, payload, enqueuedAt, delayMs, capacity.
 * If the hash exists the queue holds the id: nothing changes ("held"). Else, if ready + delayed (XLEN −
 * pending + ZCARD) is at capacity: "full". Else the hash is created and the job either XADDed (ready) or
 * ZADDed to the delayed set at Redis time + delay: "added". One script so that the capacity check and the
 * add cannot interleave with another producer's.
 */
const offerScript = prelude + `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'held' end
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1] + redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[6]) then return 'full' end
local delay = tonumber(ARGV[5])
if delay > 0 then
  redis.call('HSET', KEYS[3], 'payload', ARGV[3], 'enqueuedAt', ARGV[4], 'attempts', 0, 'state', 'delayed')
  redis.call('ZADD', KEYS[2], nowMillis() + delay, ARGV[2])
else
  local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2])
  redis.call('HSET', KEYS[3], 'payload', ARGV[3], 'enqueuedAt', ARGV[4], 'attempts', 0, 'state', 'ready', 'entry', entry)
end
return 'added'
`

/**
 * take — KEYS: stream, dead; ARGV: group, consumer, leaseMs, maxAttempts, jobPrefix, at, maxDead, scan, wanted.
 * Leases up to `wanted` jobs to this consumer (one per taker waiting in this process). First, when `scan` is 1,
 * expired leases (any consumer's entry idle for leaseMs or more), walking the PEL with XAUTOCLAIM (the walk costs
 * Redis time in proportion to the leased jobs, so a process asks for it at most once per `recheck` — a quarter
 * of the lease, at most `takerRecheck` — unless the last walk stopped early): a job already delivered
 * maxAttempts times is dead-lettered instead (its worker keeps dying or hanging), otherwise it is leased to this
 * consumer. Then new entries with XREADGROUP `>`, oldest first. Leasing increments the hash's `attempts` in the
 * same step, so the attempt is exact and a stale lease's token no longer matches. Entries without a matching hash
 * (never written by this module) are acknowledged and dropped. Returns { dropped dead letters, 1 if the walk
 * stopped before the end of the PEL (else 0), then id, entry, attempts, payload, enqueuedAt of each lease }.
 */
const takeScript = prelude + `
local stream, dead = KEYS[1], KEYS[2]
local group, consumer, leaseMs, maxAttempts, jobPrefix = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local wanted = tonumber(ARGV[9])
local dropped = {}
local reply = { dropped, 0 }
local leased = 0
local function forget(entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end
local function lease(entry, id)
  local job = jobPrefix .. id
  local attempts = redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('HSET', job, 'state', 'leased', 'consumer', consumer)
  local fields = redis.call('HMGET', job, 'payload', 'enqueuedAt')
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4], reply[n + 5] = id, entry, tostring(attempts), fields[1], fields[2]
  leased = leased + 1
end
if ARGV[8] == '1' then
  local cursor = '0-0'
  repeat
    local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, leaseMs, cursor, 'COUNT', wanted - leased)
    cursor = claimed[1]
    for _, message in ipairs(claimed[2]) do
      local entry, fields = message[1], message[2]
      local id = fields and fields[2]
      local state = id and redis.call('HMGET', jobPrefix .. id, 'state', 'entry', 'attempts')
      if not state or state[1] ~= 'leased' or state[2] ~= entry then
        forget(entry)
      elseif tonumber(state[3]) >= maxAttempts then
        local gone = kill(stream, group, dead, jobPrefix, id, entry, 'lease expired on attempt ' .. state[3], ARGV[6], ARGV[7])
        if gone then table.insert(dropped, gone) end
      else
        lease(entry, id)
      end
    end
  until cursor == '0-0' or leased >= wanted
  if cursor ~= '0-0' then reply[2] = 1 end
end
while leased < wanted do
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', wanted - leased, 'STREAMS', stream, '>')
  if not read then break end
  for _, message in ipairs(read[1][2]) do
    local entry, fields = message[1], message[2]
    local id = fields and fields[2]
    local state = id and redis.call('HMGET', jobPrefix .. id, 'state', 'entry')
    if state and state[1] == 'ready' and state[2] == entry then lease(entry, id) else forget(entry) end
  end
end
return reply
`

/**
 * ack — KEYS: stream; ARGV: group, consumer, jobPrefix, then id, entry, attempts of each lease to ack.
 * For each lease: refused ("lost") unless the job is still leased by it (same consumer, entry and attempts);
 * else the job is gone: XACK + XDEL of its entry and DEL of its hash, its id free again ("acked"). Acks made
 * while one is on its way to Redis are sent together, so under load one call settles many jobs.
 */
const ackScript = `
local stream, group, consumer, jobPrefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local statuses, entries = {}, {}
for i = 4, #ARGV, 3 do
  local job = jobPrefix .. ARGV[i]
  local state = redis.call('HMGET', job, 'state', 'entry', 'attempts', 'consumer')
  if state[1] == 'leased' and state[2] == ARGV[i + 1] and state[3] == ARGV[i + 2] and state[4] == consumer then
    redis.call('DEL', job)
    table.insert(entries, ARGV[i + 1])
    table.insert(statuses, 'acked')
  else
    table.insert(statuses, 'lost')
  end
end
if #entries > 0 then
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
end
return statuses
`

/**
 * settle — KEYS: stream, delayed, dead, job hash; ARGV: group, consumer, entry, attempts, action, delayMs,
 * reason, at, maxAttempts, maxDead, id, jobPrefix.
 * Refuses ("lost") unless the job is still leased by this lease: same consumer, entry and attempts. Then:
 * - renew: XCLAIM to the same consumer with JUSTID, which resets the entry's idle time (the lease's age)
 *   without counting a delivery;
 * - release (the lease's Scope closed unsettled) and nack without delay: XACK + XDEL + a new XADD at the back
 *   of the stream, so the job is ready at once (not merely claimable later) and `depth` says so; the attempt
 *   already counted stays counted;
 * - nack with delay: XACK + XDEL + ZADD to the delayed set;
 * - nack on the maxAttempts-th delivery, and deadLetter: to the dead letters.
 */
const settleScript = prelude + `
local stream, delayed, dead, job = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, entry, attempts, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local state = redis.call('HMGET', job, 'state', 'entry', 'attempts', 'consumer')
if state[1] ~= 'leased' or state[2] ~= entry or state[3] ~= attempts or state[4] ~= consumer then return { 'lost' } end
if action == 'renew' then
  redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID')
  return { 'renewed' }
end
if action == 'nack' and tonumber(attempts) >= tonumber(ARGV[9]) then action = 'dead' end
if action == 'dead' then
  return { 'dead', kill(stream, group, dead, ARGV[12], ARGV[11], entry, ARGV[7], ARGV[8], ARGV[10]) }
end
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
redis.call('HDEL', job, 'consumer')
local delay = tonumber(ARGV[6])
if action == 'nack' and delay > 0 then
  redis.call('HDEL', job, 'entry')
  redis.call('HSET', job, 'state', 'delayed')
  redis.call('ZADD', delayed, nowMillis() + delay, ARGV[11])
  return { 'delayed' }
end
redis.call('HSET', job, 'state', 'ready', 'entry', redis.call('XADD', stream, '*', 'id', ARGV[11]))
return { 'ready' }
`

/**
 * promote — KEYS: stream, delayed; ARGV: jobPrefix, batch.
 * Moves up to `batch` due members of the delayed set (score ≤ Redis time) to the stream: ZREM + XADD + the
 * hash's new state and entry, in one step so a job is never both or neither. Returns how many moved and the
 * ms until the next one is due (−1 when none is delayed), which paces the promoter.
 */
const promoteScript = prelude + `
local now = nowMillis()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local job = ARGV[1] .. id
  if redis.call('HGET', job, 'state') == 'delayed' then
    redis.call('HSET', job, 'state', 'ready', 'entry', redis.call('XADD', KEYS[1], '*', 'id', id))
  end
end
local next = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if next[2] then return { #due, tostring(tonumber(next[2]) - now) } end
return { #due, '-1' }
`

/**
 * requeue — KEYS: stream, dead, job hash; ARGV: id.
 * A dead job leaves the dead list (LREM) and is XADDed as ready with its attempts reset to 0, in one step.
 */
const requeueScript = `
if redis.call('HGET', KEYS[3], 'state') ~= 'dead' then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'ready', 'attempts', 0, 'entry', redis.call('XADD', KEYS[1], '*', 'id', ARGV[1]))
redis.call('HDEL', KEYS[3], 'reason', 'at')
return 1
`

/**
 * depth — KEYS: stream, delayed, dead; ARGV: group. One script so the four counts are of one moment:
 * ready = XLEN − pending, leased = pending (XPENDING summary), delayed = ZCARD, dead = LLEN.
 */
const depthScript = `
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
return { redis.call('XLEN', KEYS[1]) - pending, pending, redis.call('ZCARD', KEYS[2]), redis.call('LLEN', KEYS[3]) }
`

/**
 * deadLetters — KEYS: dead; ARGV: jobPrefix. The dead list with each job's fields, read in one step.
 */
const deadLettersScript = `
local letters = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', ARGV[1] .. id, 'payload', 'attempts', 'reason', 'at')
  table.insert(letters, { id, fields[1], fields[2], fields[3], fields[4] })
end
return letters
`

/**
 * retire — KEYS: stream; ARGV: group, consumer. On close, the consumer leaves the group, but only if it holds
 * no pending entry: DELCONSUMER drops the consumer's PEL, whose jobs would then never be delivered again.
 */
const retireScript = `
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`

const scripts = {
  offer: script(offerScript),
  take: script(takeScript),
  ack: script(ackScript),
  settle: script(settleScript),
  promote: script(promoteScript),
  requeue: script(requeueScript),
  depth: script(depthScript),
  deadLetters: script(deadLettersScript),
  retire: script(retireScript)
}

// ---------------------------------------------------------------------------------------------------------

/** What the queue knows of a lease it granted; the Lease itself is the contract's plain object. */
interface Held {
  readonly consumer: string
  readonly entry: string
  readonly lost: Signal.Signal
  /** Settled by this process: the release and the lease watch have nothing more to do. */
  settled: boolean
  /** Settle calls in flight: the lease watch does not judge the lease meanwhile. */
  settling: number
}

const held = new WeakMap<JobQueue.Lease, Held>()

/**
 * A queue on Redis, living as long as the current Scope, whose fibers (wake-up read, delayed-job promoter,
 * lease watch, fetcher, acker) it starts; the stream and consumer group are created when first needed.
 * Closing the Scope stops the fibers, fails the takes and acks still waiting with `QueueUnavailable` (`the
 * queue is closed`), leaves the group if this consumer holds no lease, and closes the connections it opened
 * (within 500 ms each). The jobs stay in Redis. Dies when the options are invalid or `name` is empty. Making
 * it sends nothing to Redis; while Redis is away, operations fail with `QueueUnavailable`. Ids it makes are
 * `job-<uuid>`.
 */
export const make = (options: Options): Effect.Effect<JobQueue.JobQueueService, never, Scope.Scope> =>
  Effect.gen(function*() {
    const problem = JobQueue.invalidOptions(options) ?? (options.name === "" ? "name must not be empty" : undefined)
    if (problem !== undefined) return yield* Effect.dieMessage(`RedisJobQueue: ${problem}`)
    const leaseDuration = Duration.decode(options.leaseDuration)
    const maxDeadLetters = options.maxDeadLetters ?? JobQueue.defaultMaxDeadLetters
    const leaseMillis = Math.max(1, Math.round(Duration.toMillis(leaseDuration)))
    // Expired leases are looked for this often, so a dead consumer's jobs are taken over at most a quarter of
    // a lease (and at most `takerRecheck`) after their lease ran out.
    const recheckMillis = Math.max(10, Math.min(Duration.toMillis(takerRecheck), leaseMillis / 4))
    const recheck = Duration.millis(recheckMillis)
    const consumer = options.consumer ?? `${hostname()}:${process.pid}:${randomUUID()}`
    const prefix = `keel:jobs:${options.name}:`
    const keys = { stream: `${prefix}stream`, delayed: `${prefix}delayed`, dead: `${prefix}dead`, job: `${prefix}job:` }
    const group = `${prefix}group`

    // Connections: the caller's client (left open) or one of ours, and a dedicated one for the blocking read.
    const ownsClient = !isClient(options.redis)
    const client = isClient(options.redis) ? options.redis : open(options.redis.url, { enableAutoPipelining: true })
    const blocking = quiet(client.duplicate({ ...connectionOptions, commandTimeout: undefined }))
    // The blocking connection may be inside an XREAD BLOCK: a QUIT would wait behind it, so it is cut at once.
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(Effect.sync(() => blocking.disconnect()), ownsClient ? quit(client) : Effect.void)
    )

    let groupReady = false
    let closed = false

    const unavailable = (reason: string) => new JobQueue.QueueUnavailable({ reason })

    /** One Redis call (Connection.call), failing with QueueUnavailable; a missing group is noted for re-creation. */
    const attempt = <A>(
      what: string,
      send: () => Promise<A>,
      timeout: Duration.Duration = callTimeout,
      onAbandoned?: (value: A) => void
    ) =>
      call(what, () =>
        send().catch((error: unknown) => {
          if (describeError(error).startsWith("NOGROUP")) groupReady = false
          throw error
        }), { timeout, fail: unavailable, ...(onAbandoned === undefined ? {} : { onAbandoned }) })

    const runScript = (
      name: keyof typeof scripts,
      keyList: ReadonlyArray<string>,
      args: ReadonlyArray<string | number>,
      onAbandoned?: (reply: unknown) => void
    ) => attempt(name, () => evalScript(client, scripts[name], keyList, args), callTimeout, onAbandoned)

    /** The stream and group exist (created once, again if someone deleted them). */
    const ensureGroup = Effect.suspend(() =>
      groupReady ? Effect.void : attempt("XGROUP CREATE", () =>
        client.call("XGROUP", ["CREATE", keys.stream, group, "0", "MKSTREAM"]).catch((error) => {
          if (!describeError(error).startsWith("BUSYGROUP")) throw error
        })).pipe(Effect.tap(() => Effect.sync(() => void (groupReady = true))))
    )

    /** One try of a script, the group made sure of first. */
    const once = (name: keyof typeof scripts, keyList: ReadonlyArray<string>, args: ReadonlyArray<string | number>) =>
      Effect.zipRight(ensureGroup, runScript(name, keyList, args))

    const run = (name: keyof typeof scripts, keyList: ReadonlyArray<string>, args: ReadonlyArray<string | number>) =>
      withRetries(once(name, keyList, args))

    // Local wake-ups: every change this process makes or sees bumps `version`; a waiter remembers the version
    // it last acted on, so a change between its Redis call and its wait is not missed.
    const changed = Waiters.make()
    let version = 0
    const bump = () => {
      version++
      changed.wake()
    }
    const changeSince = (seen: number, recheck: Duration.Duration) =>
      Effect.asVoid(Effect.timeoutOption(changed.until(() => version !== seen), recheck))

    const warnDropped = (dropped: ReadonlyArray<unknown>) =>
      Effect.forEach(dropped, (id) =>
        Effect.logWarning(`RedisJobQueue ${options.name}: dead letter ${String(id)} dropped (more than ${maxDeadLetters} kept)`), {
        discard: true
      })

    // --- offer

    const offerOnce = (id: string, payload: string, delayMillis: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (enqueuedAt) =>
        run("offer", [keys.stream, keys.delayed, keys.job + id], [group, id, payload, enqueuedAt, delayMillis, options.capacity])
      ).pipe(Effect.tap((status) => status === "added" ? Effect.sync(bump) : Effect.void))

    const prepare = (payload: JobQueue.Json, offerOptions: JobQueue.OfferOptions | undefined) => ({
      id: offerOptions?.id ?? `job-${randomUUID()}`,
      payload: JSON.stringify(payload),
      delayMillis: delayMillisOf(offerOptions?.delay)
    })

    const offer = (payload: JobQueue.Json, offerOptions?: JobQueue.OfferOptions) =>
      Effect.suspend(() => {
        const job = prepare(payload, offerOptions)
        const loop: Effect.Effect<string, JobQueue.QueueUnavailable> = Effect.suspend(() => {
          const seen = version
          return Effect.flatMap(offerOnce(job.id, job.payload, job.delayMillis), (status) =>
            status === "full" ? Effect.zipRight(changeSince(seen, offerRecheck), loop) : Effect.succeed(job.id))
        })
        return loop
      })

    const tryOffer = (payload: JobQueue.Json, offerOptions?: JobQueue.OfferOptions) =>
      Effect.suspend(() => {
        const job = prepare(payload, offerOptions)
        return Effect.flatMap(offerOnce(job.id, job.payload, job.delayMillis), (status) =>
          status === "full"
            ? Effect.fail(new QueueFull({ capacity: options.capacity }))
            : Effect.succeed(job.id))
      })

    // --- settling a lease

    const lostOf = (lease: JobQueue.Lease) => new JobQueue.LeaseLost({ id: lease.id, attempt: lease.attempt })

    type Action = "renew" | "release" | "nack" | "dead"

    /** What the queue records of a settle's answer from Redis; the lease's lost listeners hear of a loss at once. */
    const concluded = (lease: JobQueue.Lease, state: Held, status: string, ends: boolean) => {
      const lost = status === "lost"
      if (lost || ends) {
        state.settled = true
        granted.delete(lease)
      }
      if (lost) state.lost.fire()
      else if (ends) bump()
      return !lost
    }

    const settleOnce = (lease: JobQueue.Lease, state: Held, action: Action, delayMillis: number, reason: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) =>
        once("settle", [keys.stream, keys.delayed, keys.dead, keys.job + lease.id], [
          group,
          state.consumer,
          state.entry,
          lease.attempt,
          action,
          delayMillis,
          reason,
          at,
          options.maxAttempts,
          maxDeadLetters,
          lease.id,
          keys.job
        ]))

    const settle = (lease: JobQueue.Lease, action: Action, delayMillis = 0, reason = "") =>
      Effect.suspend(() => {
        const state = held.get(lease)
        if (state === undefined || state.settled) return Effect.fail(lostOf(lease))
        state.settling++
        return withRetries(settleOnce(lease, state, action, delayMillis, reason)).pipe(
          Effect.ensuring(Effect.sync(() => void state.settling--)),
          Effect.flatMap((reply) => {
            const [status, dropped] = reply as [string, string | null | undefined]
            if (!concluded(lease, state, status, action !== "renew")) return Effect.fail(lostOf(lease))
            return typeof dropped === "string" ? warnDropped([dropped]) : Effect.void
          })
        )
      })

    // Acks wait here for the acker (below), which sends all that are waiting in one script call, one call at a
    // time: an ack costs one call when the queue is quiet, a share of one under load.
    interface PendingAck {
      readonly lease: JobQueue.Lease
      readonly state: Held
      readonly resume: (result: Effect.Effect<void, JobQueue.QueueUnavailable | JobQueue.LeaseLost>) => void
    }
    let pendingAcks: Array<PendingAck> = []
    const acksWaiting = Waiters.make()

    let sendingAcks: Array<PendingAck> = []

    const ack = (lease: JobQueue.Lease) =>
      Effect.suspend(() => {
        const state = held.get(lease)
        if (state === undefined || state.settled) return Effect.fail(lostOf(lease))
        if (closed) return Effect.fail(unavailable("ack: the queue is closed"))
        state.settling++
        return Effect.async<void, JobQueue.QueueUnavailable | JobQueue.LeaseLost>((resume) => {
          pendingAcks.push({ lease, state, resume })
          acksWaiting.wake()
        })
      })

    const answerAck = ({ lease, resume, state }: PendingAck, status: string | JobQueue.QueueUnavailable) => {
      state.settling--
      if (typeof status !== "string") resume(Effect.fail(status))
      else resume(concluded(lease, state, status, true) ? Effect.void : Effect.fail(lostOf(lease)))
    }

    /** Sends the acks waiting, at most `maxBatch` a call; when the queue closes, the acks left fail. */
    const acker = Effect.gen(function*() {
      while (true) {
        yield* acksWaiting.until(() => pendingAcks.length > 0)
        sendingAcks = pendingAcks.slice(0, maxBatch)
        pendingAcks = pendingAcks.slice(sendingAcks.length)
        const args: Array<string | number> = [group, consumer, keys.job]
        for (const { lease, state } of sendingAcks) args.push(lease.id, state.entry, lease.attempt)
        const reply = yield* Effect.either(run("ack", [keys.stream], args))
        const sent = sendingAcks
        sendingAcks = []
        sent.forEach((pending, index) =>
          answerAck(pending, reply._tag === "Left" ? reply.left : (reply.right as ReadonlyArray<string>)[index] ?? "lost")
        )
      }
    }).pipe(Effect.ensuring(Effect.sync(() => {
      const left = [...sendingAcks, ...pendingAcks]
      sendingAcks = []
      pendingAcks = []
      for (const pending of left) answerAck(pending, unavailable("ack: the queue is closed"))
    })))

    // Released unsettled when the taker's Scope closes: ready again at once. Failures are dropped: the lease
    // then expires and is taken over.
    const release = (lease: JobQueue.Lease) =>
      Effect.suspend(() => {
        const state = held.get(lease)
        return state === undefined || state.settled ? Effect.void : Effect.ignore(settle(lease, "release"))
      })

    // Leases this queue granted and has not settled, for the lease watch.
    const granted = new Set<JobQueue.Lease>()

    /**
     * Completes `lost` of every granted lease whose job is no longer leased by it (its lease expired and someone
     * took the job over): all granted leases are read in one pipelined round trip, every third of a lease.
     */
    const leaseWatch = Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(Duration.millis(Math.max(10, Math.floor(leaseMillis / 3))))
        const watched = [...granted].filter((lease) => {
          const state = held.get(lease)!
          if (state.settled) granted.delete(lease)
          return !state.settled && state.settling === 0
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
          const state = held.get(lease)!
          const [error, fields] = replies.value[index] ?? [null, null]
          if (error !== null || fields === null || state.settling > 0 || state.settled) continue
          const [jobState, entry, attempts, owner] = fields as ReadonlyArray<string | null>
          if (
            jobState !== "leased" || entry !== state.entry || attempts !== String(lease.attempt) || owner !== state.consumer
          ) {
            state.settled = true
            granted.delete(lease)
            state.lost.fire()
          }
        }
      }
    })

    // --- take

    /** A lease the take script granted (id, entry, attempts, payload, enqueuedAt), now held and watched here. */
    const grant = (fields: ReadonlyArray<unknown>): JobQueue.Lease => {
      const [id, entry, attempts, payload, enqueuedAt] = fields as ReadonlyArray<string>
      const lost = Signal.make()
      const lease: JobQueue.Lease = {
        id: id!,
        payload: JSON.parse(payload!) as JobQueue.Json,
        attempt: Number(attempts),
        enqueuedAt: Number(enqueuedAt),
        lost: lost.await,
        onLost: lost.listen
      }
      held.set(lease, { consumer, entry: entry!, lost, settled: false, settling: 0 })
      granted.add(lease)
      bump()
      return lease
    }

    // A lease granted after its taker stopped waiting goes back to the queue at once, in the background.
    const runtime = yield* Effect.runtime<never>()
    const releaseInBackground = (lease: JobQueue.Lease) => void Runtime.runFork(runtime)(release(lease))

    // Takers waiting for a lease, oldest first. One fetcher (below) leases as many jobs as takers wait in one
    // script call, one call at a time, and hands them out in order.
    interface Taker {
      readonly resume: (result: Effect.Effect<JobQueue.Lease, JobQueue.QueueUnavailable>) => void
      /** The lease handed to this taker, until its fiber has taken it up. */
      lease: JobQueue.Lease | undefined
    }
    const takers = new Set<Taker>()
    const takersWaiting = Waiters.make()

    /**
     * Waits for the fetcher to hand this taker a lease. A taker interrupted while waiting leaves the line; a
     * lease already handed to it goes back to the queue at once.
     */
    const awaitLease = Effect.async<JobQueue.Lease, JobQueue.QueueUnavailable>((resume) => {
      if (closed) return resume(Effect.fail(unavailable("take: the queue is closed")))
      const taker: Taker = { resume, lease: undefined }
      takers.add(taker)
      takersWaiting.wake()
      return Effect.sync(() => {
        takers.delete(taker)
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

    /** Hands the leases to the takers in line; a lease no one is left to take goes back to the queue. */
    const handOut = (leases: ReadonlyArray<JobQueue.Lease>) => {
      for (const lease of leases) {
        const taker = takers.values().next().value
        if (taker === undefined) {
          releaseInBackground(lease)
          continue
        }
        takers.delete(taker)
        taker.lease = lease
        taker.resume(Effect.succeed(lease))
      }
    }

    /** Every taker in line fails with `error` (the queue is unreachable); each decides when to try again. */
    const failTakers = (error: JobQueue.QueueUnavailable) => {
      const failed = [...takers]
      takers.clear()
      for (const taker of failed) taker.resume(Effect.fail(error))
    }

    // Clock millis of the last walk for expired leases that reached the end of the PEL (see the take script).
    let lastFullScanAt = Number.NEGATIVE_INFINITY

    /** The leases a take script's reply grants, now held (and watched) by this queue. */
    const leasesOf = (reply: ReadonlyArray<unknown>) => {
      const leases: Array<JobQueue.Lease> = []
      for (let index = 2; index + 4 < reply.length; index += 5) leases.push(grant(reply.slice(index, index + 5)))
      return leases
    }

    // A reply that comes after the fetcher stopped waiting (the queue is closing): its leases go back at once.
    const releaseAbandoned = (reply: unknown) => {
      for (const lease of leasesOf(reply as ReadonlyArray<unknown>)) releaseInBackground(lease)
    }

    /** One take script call for `wanted` takers; the wait for its reply can be interrupted (see above). */
    const fetchOnce = (wanted: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) => {
        const scan = at - lastFullScanAt >= recheckMillis
        const args = [group, consumer, leaseMillis, options.maxAttempts, keys.job, at, maxDeadLetters, scan ? 1 : 0, wanted]
        return Effect.zipRight(ensureGroup, runScript("take", [keys.stream, keys.dead], args, releaseAbandoned)).pipe(
          Effect.flatMap((answer) => {
            const reply = answer as ReadonlyArray<unknown>
            if (scan && reply[1] === 0) lastFullScanAt = at
            const leases = leasesOf(reply)
            const dropped = reply[0] as ReadonlyArray<string>
            return dropped.length === 0 ? Effect.succeed(leases) : Effect.as(warnDropped(dropped), leases)
          })
        )
      })

    /**
     * Serves the takers in line: as many jobs as they are (at most `maxBatch`) in one call; when the queue had
     * fewer, it waits for a change (an offer anywhere, a release, a due delayed job) or the recheck, as expired
     * leases of other consumers become claimable without any change.
     */
    const fetcher = Effect.gen(function*() {
      while (true) {
        yield* takersWaiting.until(() => takers.size > 0)
        const seen = version
        const wanted = Math.min(takers.size, maxBatch)
        const fetched = yield* Effect.either(withRetries(fetchOnce(wanted)))
        if (fetched._tag === "Left") {
          failTakers(fetched.left)
          continue
        }
        handOut(fetched.right)
        if (fetched.right.length < wanted) yield* changeSince(seen, recheck)
      }
    }).pipe(Effect.ensuring(Effect.sync(() => failTakers(unavailable("take: the queue is closed")))))

    // --- fibers of the queue

    /** Moves due delayed jobs to the stream, sleeping until the next is due (at most `promoteInterval`). */
    const promoter = Effect.gen(function*() {
      while (true) {
        const reply = yield* Effect.either(run("promote", [keys.stream, keys.delayed], [keys.job, promoteBatch]))
        let pause = Duration.toMillis(promoteInterval)
        if (reply._tag === "Right") {
          const [moved, nextMillis] = reply.right as [number, string]
          if (moved > 0) bump()
          const next = Number(nextMillis)
          if (moved >= promoteBatch) pause = 0
          else if (next >= 0) pause = Math.min(pause, Math.max(1, next))
        }
        yield* Effect.sleep(Duration.millis(pause))
      }
    })

    /**
     * Wakes the local takers when an entry is added to the stream by anyone: a plain XREAD BLOCK (no group, so
     * it takes nothing) from the newest entry seen, on the dedicated connection, bounded to `blockMillis`.
     */
    const watcher = Effect.gen(function*() {
      let lastSeen: string | undefined
      while (true) {
        if (lastSeen === undefined) {
          const newest = yield* Effect.either(attempt("XREVRANGE", () => blocking.xrevrange(keys.stream, "+", "-", "COUNT", 1)))
          if (newest._tag === "Left") {
            yield* Effect.sleep(Duration.millis(500))
            continue
          }
          lastSeen = newest.right[0]?.[0] ?? "0-0"
        }
        const read = yield* Effect.either(attempt(
          "XREAD",
          () => blocking.call("XREAD", ["BLOCK", blockMillis, "COUNT", 100, "STREAMS", keys.stream, lastSeen!]),
          Duration.sum(Duration.millis(blockMillis), callTimeout)
        ))
        if (read._tag === "Left") {
          yield* Effect.sleep(Duration.millis(500))
          continue
        }
        const streams = read.right as ReadonlyArray<[string, ReadonlyArray<[string, unknown]>]> | null
        const entries = streams?.[0]?.[1] ?? []
        if (entries.length > 0) {
          lastSeen = entries[entries.length - 1]![0]
          bump()
        }
      }
    })

    // Finalizers run in reverse: the fibers stop, then the consumer retires, then the connections close.
    yield* Effect.addFinalizer(() =>
      Effect.ignore(attempt(
        "retire",
        () => groupReady ? evalScript(client, scripts.retire, [keys.stream], [group, consumer]) : Promise.resolve(0),
        Duration.millis(quitWithinMillis)
      ))
    )
    yield* Effect.forkScoped(Effect.interruptible(promoter))
    yield* Effect.forkScoped(Effect.interruptible(watcher))
    yield* Effect.forkScoped(Effect.interruptible(leaseWatch))
    yield* Effect.forkScoped(Effect.interruptible(fetcher))
    yield* Effect.forkScoped(Effect.interruptible(acker))
    // Before the fibers stop: takes and acks from now on fail at once instead of waiting for them.
    yield* Effect.addFinalizer(() => Effect.sync(() => void (closed = true)))

    const service: JobQueue.JobQueueService = {
      capacity: options.capacity,
      leaseDuration,
      maxAttempts: options.maxAttempts,
      offer,
      tryOffer,
      take,
      acquire,
      release,
      renew: (lease) => settle(lease, "renew"),
      ack,
      nack: (lease, nackOptions?: JobQueue.NackOptions) =>
        settle(
          lease,
          "nack",
          delayMillisOf(nackOptions?.delay),
          nackOptions?.error ?? `failed ${lease.attempt} attempt(s)`
        ),
      deadLetter: (lease, reason) => settle(lease, "dead", 0, reason),
      deadLetters: Effect.map(run("deadLetters", [keys.dead], [keys.job]), (reply) =>
        (reply as ReadonlyArray<[string, string, string, string, string]>).map(([id, payload, attempts, reason, at]) => ({
          id,
          payload: JSON.parse(payload) as JobQueue.Json,
          attempts: Number(attempts),
          reason,
          at: Number(at)
        }))),
      requeue: (id) =>
        Effect.map(run("requeue", [keys.stream, keys.dead, keys.job + id], [id]), (moved) => {
          if (moved === 1) bump()
          return moved === 1
        }),
      depth: Effect.map(run("depth", [keys.stream, keys.delayed, keys.dead], [group]), (reply) => {
        const [ready, leased, delayed, dead] = reply as [number, number, number, number]
        return { ready, leased, delayed, dead }
      })
    }
    return service
  })

/**
 * The queue as the `JobQueue` service, living as long as the layer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RedisJobQueue } from "keel/redis"
 * import { JobQueue } from "keel/services"
 *
 * const JobQueueLive = RedisJobQueue.layer({
 *   redis: { url: "redis://localhost:6379" },
 *   name: "emails",
 *   capacity: 10_000,
 *   leaseDuration: "30 seconds",
 *   maxAttempts: 5
 * })
 *
 * const program = Effect.flatMap(JobQueue.JobQueue, (queue) => queue.depth).pipe(Effect.provide(JobQueueLive))
 * ```
 */
export const layer = (options: Options): Layer.Layer<JobQueue.JobQueue> => Layer.scoped(JobQueue.JobQueue, make(options))
