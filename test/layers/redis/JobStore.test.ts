/**
 * The Redis JobStore against a real `redis-server` (started on a free port, without persistence, and stopped
 * after the file): the whole JobStore contract (test/services/JobStoreContract.ts) on TestClock, plus what only
 * a shared backend promises: stores of the same name in different places (different connections) see each
 * other's records, keys and counts; concurrent creates with one idempotency key make one record; concurrent
 * outcomes leave exactly one, and the first one stays; capacity and eviction hold across stores; results of
 * every JSON shape come back equal; a Redis that is gone or hung makes every method fail with StoreUnavailable
 * in bounded time (and a hung one that wakes up is used again); records outlive the store that wrote them; the
 * caller's own client is left open; `layer` provides the service. Every wait is bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, Layer, Option } from "effect"
import { Redis } from "ioredis"
import * as RedisJobStore from "../../../layers/redis/JobStore.js"
import { type JobState, type JobStoreService, StoreFull, StoreUnavailable } from "../../../services/JobStore.js"
import { describeJobStoreContract, expectLayerStore, layerCapacity } from "../../services/JobStoreContract.js"
import { type RedisServer, startRedis } from "../../support/redisServer.js"

let server: RedisServer | undefined
/** The contract's stores share this client (theirs to use, not to close), so a case costs no connection. */
let shared: Redis | undefined
beforeAll(async () => {
  server = await startRedis()
  shared = new Redis(server.url, { maxRetriesPerRequest: 0 })
})
afterAll(async () => {
  shared?.disconnect()
  await server?.stop()
})
const url = () => server!.url

let names = 0
/** A name no other store of this run uses: every test starts from an empty store. */
const freshName = (what: string) => `test-${process.pid}-${++names}-${what}`

// ---------------------------------------------------------------------------------------------------------

describeJobStoreContract("redis", {
  make: ({ capacity }) =>
    Effect.suspend(() => RedisJobStore.make({ redis: shared!, name: freshName("contract"), capacity }))
})

/** `effect`, or a defect saying what was not done after `ms` of (live) time. */
const boundedBy = (ms: number, what: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFailCause(effect, {
    duration: Duration.millis(ms),
    onTimeout: () => Cause.die(new Error(`${what}: not done within ${ms} ms`))
  })

/** Two stores of one name, each on its own connection. */
const twoStores = (capacity: number) =>
  Effect.gen(function*() {
    const options = { redis: { url: url() }, name: freshName("pair"), capacity }
    return [yield* RedisJobStore.make(options), yield* RedisJobStore.make(options)] as const
  })

const completed = (result: unknown): JobState => ({ _tag: "Completed", result, attempts: 1 })
const terminalCount = (byState: Readonly<Record<JobState["_tag"], number>>) =>
  byState.Completed + byState.Failed + byState.Unfinished

describe("RedisJobStore", () => {
  it.live("two stores of the same name (two connections) see each other's records, keys, states and counts", () =>
    Effect.scoped(Effect.gen(function*() {
      const [first, second] = yield* twoStores(10)
      const { record } = yield* first.create({ id: "j1", kind: "email", idempotencyKey: "k1" })
      expect(yield* second.get("j1")).toEqual(Option.some(record))
      expect(yield* second.create({ id: "j2", kind: "email", idempotencyKey: "k1" })).toEqual({ record, created: false })

      yield* second.update("j1", { _tag: "Running", attempt: 1 })
      yield* second.update("j1", completed({ sent: 3 }))
      expect(Option.map(yield* first.get("j1"), (found) => found.state)).toEqual(Option.some(completed({ sent: 3 })))
      const stats = { size: 1, capacity: 10, byState: { Queued: 0, Running: 0, Completed: 1, Failed: 0, Unfinished: 0 } }
      expect(yield* first.stats).toEqual(stats)
      expect(yield* second.stats).toEqual(stats)

      // Another name is another store.
      const other = yield* RedisJobStore.make({ redis: { url: url() }, name: freshName("other"), capacity: 10 })
      expect(yield* other.get("j1")).toEqual(Option.none())
      expect((yield* other.stats).size).toBe(0)

      // A remove in one frees the key for the other.
      yield* second.remove("j1")
      expect(yield* first.get("j1")).toEqual(Option.none())
      const again = yield* first.create({ id: "j3", kind: "email", idempotencyKey: "k1" })
      expect([again.created, again.record.id]).toEqual([true, "j3"])
    })))

  it.live("concurrent creates with the same idempotencyKey from two stores make exactly one record", () =>
    Effect.scoped(Effect.gen(function*() {
      const stores = yield* twoStores(100)
      const rounds = 5
      for (let round = 0; round < rounds; round++) {
        const outcomes = yield* Effect.all(
          Array.from({ length: 20 }, (_, n) =>
            stores[n % 2]!.create({ id: `r${round}-${n}`, kind: "k", idempotencyKey: `key-${round}` })),
          { concurrency: "unbounded" }
        )
        const created = outcomes.filter((outcome) => outcome.created)
        expect(created).toHaveLength(1)
        for (const outcome of outcomes) expect(outcome.record).toEqual(created[0]!.record)
        for (const store of stores) {
          expect(yield* store.get(created[0]!.record.id)).toEqual(Option.some(created[0]!.record))
        }
      }
      expect(yield* stores[1].stats).toMatchObject({ size: rounds, byState: { Queued: rounds } })
    })))

  it.live("concurrent terminal updates from two stores: the first outcome stays, later and concurrent ones are ignored", () =>
    Effect.scoped(Effect.gen(function*() {
      const [first, second] = yield* twoStores(50)
      // In sequence across stores: the first outcome is kept, whatever comes after it from the other store.
      yield* first.create({ id: "seq", kind: "k" })
      yield* first.update("seq", completed("first"))
      const done = yield* first.get("seq")
      yield* second.update("seq", { _tag: "Failed", error: "second", attempts: 2 })
      yield* second.update("seq", { _tag: "Running", attempt: 2 })
      expect(yield* second.get("seq")).toEqual(done)

      // At once from both stores: exactly one outcome lands per job, counted once, and stays.
      const ids = Array.from({ length: 10 }, (_, n) => `race-${n}`)
      for (const id of ids) yield* first.create({ id, kind: "k" })
      const writes = (store: JobStoreService, by: string) =>
        ids.flatMap((id) => [
          store.update(id, { _tag: "Running", attempt: 1 }),
          store.update(id, completed(by)),
          store.update(id, { _tag: "Failed", error: by, attempts: 1 }),
          store.update(id, { _tag: "Running", attempt: 2 })
        ])
      yield* Effect.all([...writes(first, "first"), ...writes(second, "second")], { concurrency: "unbounded" })
      const outcomes = new Map<string, JobState>()
      for (const id of ids) {
        const state = Option.getOrThrow(yield* second.get(id)).state
        expect(["Completed", "Failed"]).toContain(state._tag)
        outcomes.set(id, state)
      }
      const stats = yield* first.stats
      expect(stats.size).toBe(ids.length + 1)
      expect(terminalCount(stats.byState)).toBe(ids.length + 1)
      expect(stats.byState.Queued + stats.byState.Running).toBe(0)

      yield* Effect.all(ids.map((id) => second.update(id, { _tag: "Unfinished", reason: "late", attempts: 1 })))
      for (const id of ids) expect(Option.getOrThrow(yield* first.get(id)).state).toEqual(outcomes.get(id))
    })))

  it.live("capacity holds across stores: a create in one evicts the record finished earliest in the other, or StoreFull", () =>
    Effect.scoped(Effect.gen(function*() {
      const [first, second] = yield* twoStores(2)
      yield* first.create({ id: "x", kind: "k", idempotencyKey: "key-x" })
      yield* first.create({ id: "y", kind: "k" })
      yield* second.update("x", completed("x"))

      // second is full with x finished: x goes, with its key.
      expect((yield* second.create({ id: "z", kind: "k" })).created).toBe(true)
      expect(yield* first.get("x")).toEqual(Option.none())

      // Now y and z are both Queued: nothing to forget, in either store.
      const error = yield* Effect.flip(first.create({ id: "w", kind: "k", idempotencyKey: "key-x" }))
      expect(error).toBeInstanceOf(StoreFull)
      expect(error).toMatchObject({ _tag: "StoreFull", capacity: 2 })

      yield* first.update("y", { _tag: "Failed", error: "boom", attempts: 1 })
      const reused = yield* second.create({ id: "w", kind: "k", idempotencyKey: "key-x" })
      expect([reused.created, reused.record.id]).toEqual([true, "w"])
      expect(yield* first.get("y")).toEqual(Option.none())
      for (const store of [first, second]) {
        expect(yield* store.stats).toMatchObject({ size: 2, byState: { Queued: 2, Failed: 0 } })
      }
    })))

  it.live("results of every JSON shape come back equal; a state that is not JSON dies", () =>
    Effect.scoped(Effect.gen(function*() {
      const [first, second] = yield* twoStores(20)
      const results: ReadonlyArray<unknown> = [
        { user: { id: 7, name: "Grace" }, items: [1, "two", null, true, { deep: [] }] },
        [],
        {},
        "plain text with ünïcödé ✓ and \"quotes\"",
        "",
        -0.125,
        0,
        null,
        false
      ]
      for (const [n, result] of results.entries()) {
        yield* first.create({ id: `shape-${n}`, kind: "k" })
        yield* first.update(`shape-${n}`, completed(result))
        expect(Option.map(yield* second.get(`shape-${n}`), (record) => record.state)).toEqual(
          Option.some(completed(result))
        )
      }
      yield* first.create({ id: "bigint", kind: "k" })
      const exit = yield* Effect.exit(first.update("bigint", completed(10n)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(Option.map(yield* second.get("bigint"), (record) => record.state)).toEqual(Option.some({ _tag: "Queued" }))
    })))

  it.live("with its redis-server gone, every method fails with StoreUnavailable within a bounded time", () =>
    Effect.gen(function*() {
      const lonely = yield* Effect.promise(() => startRedis())
      yield* Effect.addFinalizer(() => Effect.promise(lonely.stop))
      const store = yield* RedisJobStore.make({ redis: { url: lonely.url }, name: freshName("outage"), capacity: 10 })
      yield* store.create({ id: "before", kind: "k" })
      lonely.process().kill("SIGKILL")
      yield* Effect.promise(() => new Promise<void>((resolve) => lonely.process().once("exit", () => resolve())))

      const calls: ReadonlyArray<readonly [string, Effect.Effect<unknown, StoreFull | StoreUnavailable>]> = [
        ["create", store.create({ id: "after", kind: "k" })],
        ["update", store.update("before", completed(1))],
        ["remove", store.remove("before")],
        ["get", store.get("before")],
        ["stats", store.stats]
      ]
      // All at once, each bounded: the store's own retries give up well within the wait this allows.
      const failures = yield* Effect.forEach(calls, ([what, call]) => boundedBy(10_000, what)(Effect.flip(call)), {
        concurrency: "unbounded"
      })
      for (const failure of failures) {
        expect(failure).toBeInstanceOf(StoreUnavailable)
        expect(failure.message).toMatch(/^job store unavailable: .+ \(3 attempts\)$/)
      }
    }).pipe(Effect.scoped))

  it.live("a hung redis-server makes a call fail after its bounded tries, even uninterruptible; once awake, the store works", () =>
    Effect.gen(function*() {
      const sleepy = yield* Effect.promise(() => startRedis())
      yield* Effect.addFinalizer(() =>
        Effect.promise(() => {
          sleepy.process().kill("SIGCONT")
          return sleepy.stop()
        })
      )
      const store = yield* RedisJobStore.make({ redis: { url: sleepy.url }, name: freshName("hung"), capacity: 10 })
      const { record } = yield* store.create({ id: "j1", kind: "k" })
      sleepy.process().kill("SIGSTOP")

      // The connection stays open, so only the store's own timeout ends the wait (a worker recording an
      // outcome may call it where it cannot be interrupted).
      const failure = yield* boundedBy(10_000, "get of a hung Redis")(Effect.flip(Effect.uninterruptible(store.get("j1"))))
      expect(failure).toBeInstanceOf(StoreUnavailable)
      expect(failure.reason).toContain("no reply within 2s")

      sleepy.process().kill("SIGCONT")
      expect(yield* boundedBy(5_000, "get once Redis is awake")(store.get("j1"))).toEqual(Option.some(record))
    }).pipe(Effect.scoped))

  it.live("a create whose reply was lost is retried without a second record, and answers created=true to its caller", () =>
    Effect.scoped(Effect.gen(function*() {
      const client = new Redis(url(), { maxRetriesPerRequest: 0 })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.disconnect()))
      // The first script that runs in Redis has its reply lost on the way back: the store never hears of it.
      let lost = false
      const losing = new Proxy(client, {
        get: (target, property) => {
          const value = Reflect.get(target, property, target)
          if (typeof value !== "function") return value
          if (property !== "evalsha" && property !== "eval") return value.bind(target)
          return (...args: Array<unknown>) =>
            (value as (...args: Array<unknown>) => Promise<unknown>).apply(target, args).then((reply) => {
              if (lost) return reply
              lost = true
              return new Promise(() => {})
            })
        }
      })
      const name = freshName("lost-reply")
      const store = yield* RedisJobStore.make({ redis: losing, name, capacity: 5 })
      const outcome = yield* boundedBy(10_000, "create with a lost reply")(
        store.create({ id: "j1", kind: "email", idempotencyKey: "k1" })
      )
      expect(lost).toBe(true)
      expect(outcome.created).toBe(true)
      expect(outcome.record).toMatchObject({ id: "j1", kind: "email", idempotencyKey: "k1", state: { _tag: "Queued" } })
      const other = yield* RedisJobStore.make({ redis: client, name, capacity: 5 })
      expect(yield* other.stats).toMatchObject({ size: 1, byState: { Queued: 1 } })
      expect(yield* other.create({ id: "j2", kind: "email", idempotencyKey: "k1" })).toEqual({
        record: outcome.record,
        created: false
      })
    })))

  it.live("a client passed in is used and left open; a store made from a URL closes its own; records outlive both", () =>
    Effect.gen(function*() {
      const client = new Redis(url(), { maxRetriesPerRequest: 1 })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.disconnect()))
      const name = freshName("client")
      const connections = Effect.promise(() => client.client("LIST") as Promise<string>).pipe(
        Effect.map((list) => list.split("\n").filter((line) => line.trim() !== "").length)
      )
      const before = yield* connections

      const { record } = yield* Effect.scoped(Effect.flatMap(
        RedisJobStore.make({ redis: client, name, capacity: 5 }),
        (store) => store.create({ id: "c", kind: "k", idempotencyKey: "key-c" })
      ))
      expect(yield* Effect.promise(() => client.ping())).toBe("PONG")

      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* RedisJobStore.make({ redis: { url: url() }, name, capacity: 5 })
        expect(yield* store.get("c")).toEqual(Option.some(record))
        expect(yield* connections).toBe(before + 1)
        expect(yield* store.create({ id: "d", kind: "k", idempotencyKey: "key-c" })).toEqual({ record, created: false })
      }))
      // The store's QUIT was answered before its scope closed; Redis drops the connection right after.
      let after = yield* connections
      for (let tries = 0; after > before && tries < 100; tries++) {
        yield* Effect.sleep(Duration.millis(20))
        after = yield* connections
      }
      expect(after).toBe(before)
    }).pipe(Effect.scoped))

  it.live("an empty name dies at construction", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(RedisJobStore.make({ redis: { url: url() }, name: "", capacity: 2 })))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(String(Exit.isFailure(exit) && Cause.squash(exit.cause))).toContain("RedisJobStore.make: name must be a non-empty string")
    }))

  it.live("layer provides the JobStore contract", () =>
    expectLayerStore.pipe(Effect.provide(Layer.suspend(() =>
      RedisJobStore.layer({ redis: { url: url() }, name: freshName("layer"), capacity: layerCapacity })
    ))))
})
