/**
 * The Redis Streams JobQueue against a real `redis-server` (started on a free port, without persistence, and
 * stopped after the file): the whole JobQueue contract (test/services/JobQueueContract.ts) on real time, plus
 * what only a distributed backend promises: queues of the same name in different places share the jobs without
 * duplicates, a consumer that stops renewing loses its job to another, a consumer that vanishes (its process
 * died) has its jobs taken over after the lease, a job whose lease keeps expiring is dead-lettered past
 * maxDeliveries, a Redis that is gone makes calls fail with QueueUnavailable in bounded time, the caller's own
 * client is left open, and `layer` provides the service. Every wait is bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Metric, Option, Scope } from "effect"
import { Redis } from "ioredis"
import * as RedisJobQueue from "../../../layers/redis/JobQueue/index.js"
import { type JobQueueService, LeaseLost, metrics, QueueUnavailable } from "../../../services/JobQueue.js"
import {
  describeJobQueueContract,
  expectLayerService,
  expectOptionsChecked,
  invalidQueueOptions,
  layerOptions
} from "../../services/JobQueueContract.js"
import { type RedisServer, startRedis } from "../../support/redisServer.js"

let server: RedisServer | undefined
beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  await server?.stop()
})
const url = () => server!.url

let queues = 0
/** A name no other queue of this run uses: every test starts from an empty queue. */
const freshName = (what: string) => `test-${process.pid}-${++queues}-${what}`

// ---------------------------------------------------------------------------------------------------------

describeJobQueueContract("redis", {
  make: (options) =>
    Effect.suspend(() =>
      RedisJobQueue.make({
        redis: { url: url() },
        name: options.name,
        capacity: options.capacity,
        leaseDuration: Duration.millis(options.leaseDurationMs),
        maxDeliveries: options.maxDeliveries
      })
    ),
  advance: (ms) => Effect.sleep(Duration.millis(ms)),
  test: it.live
})

/** `effect`, or a defect naming `what` after `ms` of (live) time. */
const within = <A, E, R>(effect: Effect.Effect<A, E, R>, ms: number, what: string) =>
  Effect.timeoutFail(effect, { duration: Duration.millis(ms), onTimeout: () => new Error(`${what}: not within ${ms} ms`) })
    .pipe(Effect.orDieWith((error) => error))

/** Reads `read` every 20 ms until `done` holds of its value, which it returns; a defect after `ms`. */
const eventually = <A, E>(read: Effect.Effect<A, E>, done: (value: A) => boolean, ms: number, what: string) =>
  within(
    Effect.gen(function*() {
      let value = yield* read
      while (!done(value)) {
        yield* Effect.sleep(Duration.millis(20))
        value = yield* read
      }
      return value
    }),
    ms,
    what
  )

describe("RedisJobQueue", () => {
  it.live("two queues with the same name (two consumers) share the jobs: each job is run once, by one of them", () =>
    Effect.scoped(Effect.gen(function*() {
      const name = freshName("shared")
      const options = { redis: { url: url() }, name, capacity: 50, leaseDuration: "5 seconds", maxDeliveries: 3 } as const
      const first = yield* RedisJobQueue.make(options)
      const second = yield* RedisJobQueue.make(options)
      const ids = Array.from({ length: 30 }, (_, n) => `shared-${n}`)
      for (const id of ids) yield* first.offer({ id }, { id })

      const runs: Array<{ readonly id: string; readonly by: string; readonly delivery: number }> = []
      const worker = (queue: JobQueueService, by: string) =>
        Effect.forever(Effect.scoped(Effect.gen(function*() {
          const lease = yield* queue.take
          runs.push({ id: lease.id, by, delivery: lease.delivery })
          yield* Effect.sleep(Duration.millis(10))
          yield* queue.ack(lease)
        })))
      const workers = yield* Effect.forEach(
        [[first, "first"], [second, "second"], [first, "first"], [second, "second"]] as const,
        ([queue, by]) => Effect.fork(worker(queue, by))
      )
      yield* eventually(
        first.depth,
        (depth) => depth.ready + depth.leased === 0 && runs.length === ids.length,
        10_000,
        "all jobs run"
      )
      yield* Effect.sleep(Duration.millis(100))
      yield* Effect.forEach(workers, Fiber.interrupt)

      expect(runs.map((run) => run.id).sort()).toEqual([...ids].sort())
      expect(runs.every((run) => run.delivery === 1)).toBe(true)
      expect(runs.some((run) => run.by === "first")).toBe(true)
      expect(runs.some((run) => run.by === "second")).toBe(true)
      expect(yield* second.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
    })))

  it.live("a consumer that stops renewing loses the job to the other after the lease duration", () =>
    Effect.scoped(Effect.gen(function*() {
      const name = freshName("renewal")
      const options = { redis: { url: url() }, name, capacity: 10, leaseDuration: "600 millis", maxDeliveries: 5 } as const
      const slow = yield* RedisJobQueue.make(options)
      const other = yield* RedisJobQueue.make(options)
      yield* slow.offer("long job", { id: "long" })
      const lease = yield* slow.take
      const otherTake = yield* Effect.fork(other.take)

      // Renewed for 3 lease durations: the other consumer waits.
      for (let n = 0; n < 6; n++) {
        yield* Effect.sleep(Duration.millis(300))
        yield* slow.renew(lease)
      }
      expect(Option.isNone(yield* Fiber.poll(otherTake))).toBe(true)
      expect(yield* slow.depth).toEqual({ ready: 0, leased: 1, delayed: 0, dead: 0 })

      // Renewals stop: within the lease (plus the other's recheck) the job is the other's, delivery 2.
      const takeover = yield* within(Fiber.join(otherTake), 3_000, "takeover")
      expect(takeover).toMatchObject({ id: "long", payload: "long job", delivery: 2, enqueuedAt: lease.enqueuedAt })
      yield* within(lease.lost, 2_000, "lost of the expired lease")
      expect(yield* Effect.flip(slow.ack(lease))).toEqual(new LeaseLost({ id: "long", delivery: 1 }))
      expect(yield* Effect.flip(slow.renew(lease))).toBeInstanceOf(LeaseLost)
      yield* other.ack(takeover)
      expect(yield* other.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
    })))

  it.live("the jobs of a consumer that vanished without a word (its process died) are taken over after the lease", () =>
    Effect.scoped(Effect.gen(function*() {
      const name = freshName("crash")
      const options = { redis: { url: url() }, name, capacity: 10, leaseDuration: "500 millis", maxDeliveries: 5 } as const
      // The dead process: its queue closes, but the scope holding its leases never does.
      const deadScope = yield* Scope.make()
      const orphans = yield* Effect.scoped(Effect.gen(function*() {
        const doomed = yield* RedisJobQueue.make(options)
        for (const id of ["c1", "c2"]) yield* doomed.offer({ id }, { id })
        return [yield* Scope.extend(doomed.take, deadScope), yield* Scope.extend(doomed.take, deadScope)]
      }))
      expect(orphans.map((lease) => lease.id)).toEqual(["c1", "c2"])

      const survivor = yield* RedisJobQueue.make(options)
      expect(yield* survivor.depth).toEqual({ ready: 0, leased: 2, delayed: 0, dead: 0 })
      const started = Date.now()
      const taken = yield* within(Effect.all([survivor.take, survivor.take]), 3_000, "takeover of both jobs")
      expect(Date.now() - started).toBeGreaterThanOrEqual(300)
      expect(taken.map((lease) => [lease.id, lease.delivery]).sort()).toEqual([["c1", 2], ["c2", 2]])
      for (const lease of taken) yield* survivor.ack(lease)
      expect(yield* survivor.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
      yield* Scope.close(deadScope, Exit.void) // its release finds the queue closed: nothing happens
    })))

  it.live("a job whose lease expires on its maxDeliveries-th delivery is dead-lettered instead of delivered again, and counted so", () =>
    Effect.scoped(Effect.gen(function*() {
      const name = freshName("poison")
      const queue = yield* RedisJobQueue.make({
        redis: { url: url() },
        name,
        capacity: 10,
        leaseDuration: "300 millis",
        maxDeliveries: 2
      })
      yield* queue.offer({ crashes: "the worker" }, { id: "poison" })
      const hung = yield* Scope.make()
      expect((yield* Scope.extend(queue.take, hung)).delivery).toBe(1)
      yield* Effect.sleep(Duration.millis(400))
      expect((yield* Scope.extend(queue.take, hung)).delivery).toBe(2)
      yield* Effect.sleep(Duration.millis(400))
      const next = yield* Effect.fork(Effect.scoped(queue.take))
      const letters = yield* eventually(queue.deadLetters, (letters) => letters.length === 1, 3_000, "dead letter")
      expect(letters[0]).toMatchObject({ id: "poison", deliveries: 2, reason: "lease expired on delivery 2" })
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 1 })
      // Both expiries were takeovers: the first delivered the job again, the second dead-lettered it.
      const { deadLettered, takeovers } = metrics(name)
      expect([(yield* Metric.value(takeovers)).count, (yield* Metric.value(deadLettered)).count]).toEqual([2, 1])
      expect(Option.isNone(yield* Fiber.poll(next))).toBe(true)
      yield* Fiber.interrupt(next)
      yield* Scope.close(hung, Exit.void)
    })))

  it.live("a delayed job offered by one queue is taken by another queue of the same name when due", () =>
    Effect.scoped(Effect.gen(function*() {
      const name = freshName("delayed")
      const options = { redis: { url: url() }, name, capacity: 10, leaseDuration: "5 seconds", maxDeliveries: 3 } as const
      const producer = yield* RedisJobQueue.make(options)
      const consumer = yield* RedisJobQueue.make(options)
      const taker = yield* Effect.fork(consumer.take)
      const offeredAt = Date.now()
      yield* producer.offer("later", { id: "later", delay: Duration.millis(300) })
      const lease = yield* within(Fiber.join(taker), 3_000, "take of the delayed job")
      expect(Date.now() - offeredAt).toBeGreaterThanOrEqual(250)
      expect([lease.id, lease.delivery]).toEqual(["later", 1])
    })))

  it.live("with its redis-server gone, offer, take and depth fail with QueueUnavailable within a bounded time", () =>
    Effect.gen(function*() {
      const lonely = yield* Effect.promise(() => startRedis())
      yield* Effect.addFinalizer(() => Effect.promise(lonely.stop))
      const queue = yield* RedisJobQueue.make({
        redis: { url: lonely.url },
        name: freshName("outage"),
        capacity: 10,
        leaseDuration: "1 second",
        maxDeliveries: 3
      })
      yield* queue.offer("before", { id: "before" })
      lonely.process().kill("SIGKILL")
      yield* Effect.promise(() => new Promise<void>((resolve) => lonely.process().once("exit", () => resolve())))

      for (const [what, call] of [["offer", queue.offer("after")], ["take", queue.take], ["depth", queue.depth]] as const) {
        // Bounded: the backend's own retries give up, well within the wait this allows.
        const failure = yield* within(Effect.flip(call as Effect.Effect<unknown, QueueUnavailable, Scope.Scope>), 10_000, what)
        expect(failure).toBeInstanceOf(QueueUnavailable)
      }
    }).pipe(Effect.scoped))

  it.live("with its redis-server hung, a waiting taker is interrupted at once, a lease granted after that is released, and the queue closes in bounded time", () =>
    Effect.gen(function*() {
      const hung = yield* Effect.promise(() => startRedis())
      yield* Effect.addFinalizer(() =>
        Effect.promise(() => {
          hung.process().kill("SIGCONT")
          return hung.stop()
        })
      )
      const name = freshName("hung")
      const options = { redis: { url: hung.url }, name, capacity: 10, leaseDuration: "30 seconds", maxDeliveries: 3 } as const
      const observer = yield* RedisJobQueue.make(options)
      const closing = yield* Effect.gen(function*() {
        const queue = yield* RedisJobQueue.make(options)
        yield* queue.depth // connected
        hung.process().kill("SIGSTOP")
        // The take script is sent and its reply will only come once Redis runs again.
        const taker = yield* Effect.fork(Effect.scoped(queue.take))
        yield* Effect.sleep(Duration.millis(200))
        yield* within(Fiber.interrupt(taker), 1_000, "interrupting a taker waiting on a hung Redis")
      }).pipe(Effect.scoped, Effect.fork)
      yield* Effect.sleep(Duration.millis(100))
      // Redis runs the take script queued while it was hung (no job yet: nothing granted) …
      hung.process().kill("SIGCONT")
      yield* within(Fiber.join(closing), 5_000, "closing a queue whose Redis hung")

      // … and when a job is granted to a taker that stopped waiting, it goes back to the queue at once, not after
      // its 30 s lease.
      yield* Effect.gen(function*() {
        const queue = yield* RedisJobQueue.make(options)
        yield* queue.offer("wanted", { id: "wanted" })
        hung.process().kill("SIGSTOP")
        const taker = yield* Effect.fork(Effect.scoped(queue.take))
        yield* Effect.sleep(Duration.millis(200))
        yield* within(Fiber.interrupt(taker), 1_000, "interrupting the taker")
        hung.process().kill("SIGCONT")
        const depth = yield* eventually(observer.depth, (counts) => counts.ready === 1 && counts.leased === 0, 3_000, "release of the abandoned lease")
        expect(depth).toEqual({ ready: 1, leased: 0, delayed: 0, dead: 0 })
        const lease = yield* Effect.scoped(Effect.tap(observer.take, observer.ack))
        expect([lease.id, lease.delivery]).toEqual(["wanted", 2])
      }).pipe(Effect.scoped)
    }).pipe(Effect.scoped))

  it.live("a client passed in is used and left open; a queue made from a URL closes its own connections", () =>
    Effect.gen(function*() {
      const client = new Redis(url(), { maxRetriesPerRequest: 1 })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.disconnect()))
      const name = freshName("client")
      yield* Effect.scoped(Effect.gen(function*() {
        const queue = yield* RedisJobQueue.make({ redis: client, name, capacity: 5, leaseDuration: "1 second", maxDeliveries: 3 })
        yield* queue.offer({ via: "client" }, { id: "c" })
      }))
      expect(yield* Effect.promise(() => client.ping())).toBe("PONG")
      // The job outlived the queue that offered it: Redis holds it.
      expect(yield* Effect.promise(() => client.hget(`keel:jobs:${name}:job:c`, "state"))).toBe("ready")

      const before = yield* Effect.promise(() => client.client("LIST") as Promise<string>)
      yield* Effect.scoped(Effect.gen(function*() {
        const queue = yield* RedisJobQueue.make({ redis: { url: url() }, name, capacity: 5, leaseDuration: "1 second", maxDeliveries: 3 })
        const lease = yield* Effect.scoped(Effect.tap(queue.take, queue.ack))
        expect(lease).toMatchObject({ id: "c", payload: { via: "client" }, delivery: 1 })
      }))
      const count = (list: string) => list.split("\n").filter((line) => line.trim() !== "").length
      const after = yield* eventually(
        Effect.promise(() => client.client("LIST") as Promise<string>),
        (list) => count(list) <= count(before),
        2_000,
        "connections closed"
      )
      expect(count(after)).toBe(count(before))
    }).pipe(Effect.scoped))

  it.live("nonsensical options die at construction", () =>
    Effect.gen(function*() {
      const valid: RedisJobQueue.Options = {
        redis: { url: url() },
        name: freshName("options"),
        capacity: 2,
        leaseDuration: "1 second",
        maxDeliveries: 3
      }
      yield* expectOptionsChecked(RedisJobQueue.make, valid, [...invalidQueueOptions(valid), { ...valid, name: "" }])
    }))

  it.live("layer provides the JobQueue service with the options it was given", () =>
    expectLayerService.pipe(Effect.provide(Layer.suspend(() =>
      RedisJobQueue.layer({ redis: { url: url() }, name: freshName("layer"), ...layerOptions })
    ))))
})
