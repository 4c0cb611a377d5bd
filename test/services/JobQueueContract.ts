/**
 * The JobQueue contract as one test suite that every backend runs (memory on TestClock, Redis Streams on real
 * time): offer/take/ack round-trips JSON payloads with delivery and enqueuedAt, ready jobs come out in FIFO
 * order, delayed offers and nacks wait, offers are idempotent by id, nacks past `maxDeliveries` and explicit
 * `deadLetter`s go to the dead letters, which list oldest first and can be requeued, the queue pushes back at
 * `capacity`, a lease goes back to the queue when its Scope closes or its fiber is interrupted, an expired
 * lease is taken over (its `lost` completes, settling it fails with LeaseLost) unless renewed, waiting takers
 * each get their own job — plus a property that random offer/take/ack/nack/deadLetter/requeue sequences keep
 * every offered job accounted for exactly once.
 *
 * Capacities and lease durations are small so a real-time backend stays fast, and no wait is unbounded:
 * waiting for a fiber or for a state uses the *live* clock (at most a few seconds), whatever clock the backend
 * runs on.
 */
import { describe, expect, type it } from "@effect/vitest"
import {
  Cause,
  Clock,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  FastCheck as fc,
  Metric,
  Option,
  Record,
  TestServices
} from "effect"
import type { Scope } from "effect"
import { Ledger, PropertyRuns } from "keel/testing"
import type { Depth, Json, JobQueueService, Lease, QueueOptions } from "../../services/JobQueue.js"
import { JobQueue, LeaseLost, metrics } from "../../services/JobQueue.js"
import { QueueFull } from "../../src/Errors.js"
import { recordingTracer } from "../support/recordingTracer.js"

export interface ContractOptions {
  /** The queue's name: its metrics are `JobQueue.metrics(name)`; no other queue of the run has it. */
  readonly name: string
  readonly capacity: number
  readonly leaseDurationMs: number
  readonly maxDeliveries: number
}

export interface ContractBackend {
  /** A fresh, empty queue in the current Scope. */
  readonly make: (options: ContractOptions) => Effect.Effect<JobQueueService, never, Scope.Scope>
  /** Lets `ms` of the backend's time pass (TestClock.adjust for memory; a real sleep for a real-time backend). */
  readonly advance: (ms: number) => Effect.Effect<void>
  /** How tests run: `it.effect` (TestClock) for memory, `it.live` for a real-time backend. */
  readonly test: typeof it.live
}

let queues = 0
/** A queue name no other queue of this run has, so that its jobs and metrics are its own. */
const freshName = () => `contract-${process.pid}-${++queues}`

/** The longest any test waits (on the live clock) for something that should happen. */
const patienceMs = 3_000

const emptyDepth: Depth = { ready: 0, leased: 0, delayed: 0, dead: 0 }
const depthOf = (counts: Partial<Depth>): Depth => ({ ...emptyDepth, ...counts })

/** Lets forked fibers run up to their next suspension. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

const liveSleep = (ms: number) => TestServices.provideLive(Effect.sleep(Duration.millis(ms)))

/** Joins `fiber`, dying if it is not done within `patienceMs` of live time. */
const joinWithin = <A, E>(fiber: Fiber.Fiber<A, E>, what: string): Effect.Effect<A, E> =>
  TestServices.provideWithLive(Fiber.join(fiber), Effect.timeoutOption(Duration.millis(patienceMs))).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.dieMessage(`${what}: not done within ${patienceMs} ms`),
      onSome: Effect.succeed
    }))
  )

/** Reads `read` until `done` holds or `patienceMs` of live time pass, and returns the last value read. */
const eventually = <A, E>(read: Effect.Effect<A, E>, done: (value: A) => boolean): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const deadline = Date.now() + patienceMs
    let value = yield* read
    while (!done(value) && Date.now() < deadline) {
      yield* liveSleep(10)
      value = yield* read
    }
    return value
  })

const sameDepth = (expected: Depth) => (depth: Depth) =>
  depth.ready === expected.ready && depth.leased === expected.leased && depth.delayed === expected.delayed &&
  depth.dead === expected.dead

/** The queue's depth once it equals `expected`, or the last one read when it never does. */
const depthEventually = (queue: JobQueueService, expected: Depth) => eventually(queue.depth, sameDepth(expected))

/** What the `keel_queue_jobs` gauges of the queue named `name` say now. */
const gaugedDepth = (name: string): Effect.Effect<Depth> =>
  Effect.all(Record.map(metrics(name).jobs, (gauge) => Effect.map(Metric.value(gauge), (state) => state.value)))

/** The event counters of the queue named `name` now. */
const eventCounts = (name: string) => {
  const { deadLettered, renewalsFailed, takeovers } = metrics(name)
  const countOf = (counter: Metric.Metric.Counter<number>) => Effect.map(Metric.value(counter), (state) => state.count)
  return Effect.all(Record.map({ takeovers, renewalsFailed, deadLettered }, countOf))
}

/** Runs `effect`, dying if it is not done within `patienceMs` of live time. */
const within = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string): Effect.Effect<A, E, R> =>
  Effect.fork(effect).pipe(Effect.flatMap((fiber) => joinWithin(fiber, what)))

/** A `take` that must find a job within `patienceMs`; the lease belongs to the current Scope. */
const takeNow = (queue: JobQueueService) => within(queue.take, "take")

const expectWaiting = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.gen(function*() {
    yield* settle
    expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
  })

export const describeJobQueueContract = (backendName: string, backend: ContractBackend): void => {
  const { advance, test } = backend
  const make = (options: Partial<ContractOptions> = {}) =>
    backend.make({ name: freshName(), capacity: 10, leaseDurationMs: 1_000, maxDeliveries: 3, ...options })
  /** Lets `ms` of backend time pass, then lets forked fibers catch up. */
  const pause = (ms: number) => Effect.zipRight(advance(ms), settle)
  /** With the only job delayed by 500 ms: a take still waits at 250 ms and has the job by 650 ms. */
  const takeAfterDelay = (queue: JobQueueService, what: string) =>
    Effect.gen(function*() {
      const taker = yield* Effect.fork(queue.take)
      yield* pause(250)
      yield* expectWaiting(taker)
      expect(yield* queue.depth).toEqual(depthOf({ delayed: 1 }))
      yield* pause(400)
      return yield* joinWithin(taker, what)
    })

  describe(`JobQueue contract: ${backendName}`, () => {
    test("the queue reports the capacity, lease duration and maxDeliveries it was made with, and starts empty", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ capacity: 4, leaseDurationMs: 1_500, maxDeliveries: 7 })
        expect(queue.capacity).toBe(4)
        expect(Duration.toMillis(queue.leaseDuration)).toBe(1_500)
        expect(queue.maxDeliveries).toBe(7)
        expect(yield* queue.depth).toEqual(emptyDepth)
        expect(yield* queue.deadLetters).toEqual([])
      })))

    test("offer, take, ack: the id and payload come back with delivery 1 and enqueuedAt from the clock; acked jobs leave", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* advance(50)
        const payload: Json = { to: "ada@example.com", tags: ["welcome", 2], retry: null }
        const before = yield* Clock.currentTimeMillis
        const id = yield* queue.offer(payload, { id: "job-1" })
        const after = yield* Clock.currentTimeMillis
        expect(id).toBe("job-1")
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1 }))

        const lease = yield* takeNow(queue)
        expect(lease).toMatchObject({ id: "job-1", payload, delivery: 1 })
        expect(lease.enqueuedAt).toBeGreaterThanOrEqual(before)
        expect(lease.enqueuedAt).toBeLessThanOrEqual(after)
        expect(yield* queue.depth).toEqual(depthOf({ leased: 1 }))

        yield* queue.ack(lease)
        expect(yield* queue.depth).toEqual(emptyDepth)
        // Acked means gone: nothing is delivered again, not even once the lease would have expired.
        const next = yield* Effect.fork(queue.take)
        yield* pause(1_200)
        yield* expectWaiting(next)
        yield* Fiber.interrupt(next)
        expect(yield* queue.depth).toEqual(emptyDepth)
      })))

    test("an offer carries its deadline and, with tracing on, its send span to the lease; a bare offer carries nothing", () => {
      const recording = recordingTracer()
      return Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer("bare", { id: "bare" })
        const before = yield* Clock.currentTimeMillis
        yield* queue.offer("timed", { id: "timed", deadline: "5 seconds" })
        const after = yield* Clock.currentTimeMillis
        yield* queue.offer("traced", { id: "traced" }).pipe(
          Effect.withSpan("POST /jobs"),
          Effect.withTracer(recording.tracer)
        )
        const leases = [yield* takeNow(queue), yield* takeNow(queue), yield* takeNow(queue)]
        const [bare, timed, traced] = ["bare", "timed", "traced"].map((id) => leases.find((lease) => lease.id === id)!)
        expect(bare!.carried).toBeUndefined()
        expect(timed!.carried?.trace).toBeUndefined()
        expect(timed!.carried?.deadline).toBeGreaterThanOrEqual(before + 5_000)
        expect(timed!.carried?.deadline).toBeLessThanOrEqual(after + 5_000)
        const [request] = recording.named("POST /jobs")
        const sends = recording.spans.filter((span) => span.name.startsWith("send "))
        expect(sends).toHaveLength(1)
        expect(sends[0]!.kind).toBe("producer")
        expect(Option.map(sends[0]!.parent, (parent) => parent.spanId)).toEqual(Option.some(request!.spanId))
        expect(traced!.carried).toEqual({
          trace: { traceId: request!.traceId, spanId: sends[0]!.spanId, sampled: true }
        })
      }))
    })

    test("payloads of every JSON shape come back equal, and offers without an id get distinct fresh ids", () =>
      Effect.scoped(Effect.gen(function*() {
        const payloads: ReadonlyArray<Json> = [
          { user: { id: 7, name: "Grace" }, items: [1, "two", null, true, { deep: [] }] },
          [1, 2.5, -3, "x", [], {}],
          "plain text with ünïcödé ✓ and \"quotes\"",
          "",
          42,
          -0.125,
          0,
          null,
          true,
          false
        ]
        const queue = yield* make({ capacity: payloads.length })
        const ids: Array<string> = []
        for (const payload of payloads) ids.push(yield* queue.offer(payload))
        expect(new Set(ids).size).toBe(payloads.length)
        for (const id of ids) expect(id.length).toBeGreaterThan(0)

        const delivered = new Map<string, Json>()
        for (let i = 0; i < payloads.length; i++) {
          const lease = yield* takeNow(queue)
          delivered.set(lease.id, lease.payload)
          yield* queue.ack(lease)
        }
        expect(ids.map((id) => delivered.get(id))).toEqual(payloads)
      })))

    test("ready jobs are taken in the order they were offered", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        const ids = ["a", "b", "c", "d", "e"]
        for (const id of ids) yield* queue.offer(`payload of ${id}`, { id })
        const taken: Array<string> = []
        for (let i = 0; i < ids.length; i++) {
          const lease = yield* takeNow(queue)
          expect(lease.payload).toBe(`payload of ${lease.id}`)
          taken.push(lease.id)
        }
        expect(taken).toEqual(ids)
      })))

    test("a delayed offer is counted as delayed and cannot be taken before its delay, then it can", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        const before = yield* Clock.currentTimeMillis
        yield* queue.offer({ later: true }, { id: "later", delay: Duration.millis(500) })
        const after = yield* Clock.currentTimeMillis
        expect(yield* queue.depth).toEqual(depthOf({ delayed: 1 }))

        const lease = yield* takeAfterDelay(queue, "take of the delayed job")
        expect(lease).toMatchObject({ id: "later", payload: { later: true }, delivery: 1 })
        // enqueuedAt is when it was offered, not when it became ready.
        expect(lease.enqueuedAt).toBeGreaterThanOrEqual(before)
        expect(lease.enqueuedAt).toBeLessThanOrEqual(after)
        expect(yield* queue.depth).toEqual(depthOf({ leased: 1 }))
      })))

    test("a delayed job does not hold up the ready jobs offered after it", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer("slow", { id: "slow", delay: Duration.millis(500) })
        yield* queue.offer("fast", { id: "fast" })
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1, delayed: 1 }))
        expect((yield* takeNow(queue)).id).toBe("fast")
        yield* pause(600)
        expect((yield* takeNow(queue)).id).toBe("slow")
      })))

    test("offering an id the queue holds (ready, leased, delayed or dead) returns it and adds nothing", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ maxDeliveries: 5 })
        yield* queue.offer("original ready", { id: "ready" })
        yield* queue.offer("original leased", { id: "leased" })
        yield* queue.offer("original dead", { id: "dead" })
        yield* queue.offer("original delayed", { id: "delayed", delay: Duration.millis(500) })
        // Take "ready" and "leased" in order, put "ready" back at once, dead-letter "dead".
        const first = yield* takeNow(queue)
        const leased = yield* takeNow(queue)
        const dead = yield* takeNow(queue)
        expect([first.id, leased.id, dead.id]).toEqual(["ready", "leased", "dead"])
        yield* queue.nack(first)
        yield* queue.deadLetter(dead, "cannot succeed")
        const depth = depthOf({ ready: 1, leased: 1, delayed: 1, dead: 1 })
        expect(yield* queue.depth).toEqual(depth)

        for (const id of ["ready", "leased", "delayed", "dead"]) {
          expect(yield* queue.offer("duplicate", { id })).toBe(id)
          expect(yield* queue.tryOffer("duplicate", { id, delay: Duration.millis(100) })).toBe(id)
        }
        expect(yield* queue.depth).toEqual(depth)
        expect((yield* queue.deadLetters).map((letter) => [letter.id, letter.payload])).toEqual([
          ["dead", "original dead"]
        ])

        // The held jobs keep their original payloads.
        const again = yield* takeNow(queue)
        expect([again.id, again.payload, again.delivery]).toEqual(["ready", "original ready", 2])
        yield* pause(600)
        const delayed = yield* takeNow(queue)
        expect([delayed.id, delayed.payload]).toEqual(["delayed", "original delayed"])
      })))

    test("after an ack the same id can be offered again, as a new job", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer("first run", { id: "again" })
        yield* queue.ack(yield* takeNow(queue))
        expect(yield* queue.offer("second run", { id: "again" })).toBe("again")
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1 }))
        const lease = yield* takeNow(queue)
        expect([lease.id, lease.payload, lease.delivery]).toEqual(["again", "second run", 1])
      })))

    test("a nacked job is delivered again as delivery 2 with the same payload and enqueuedAt", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer({ n: 1 }, { id: "retry" })
        const first = yield* takeNow(queue)
        yield* advance(20)
        yield* queue.nack(first, { error: "flaky" })
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1 }))
        const second = yield* takeNow(queue)
        expect(second).toMatchObject({ id: "retry", payload: { n: 1 }, delivery: 2, enqueuedAt: first.enqueuedAt })
        yield* queue.ack(second)
        expect(yield* queue.depth).toEqual(emptyDepth)
      })))

    test("a nack with a delay makes the job delayed, then ready again after the delay", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer("x", { id: "backoff" })
        yield* queue.nack(yield* takeNow(queue), { delay: Duration.millis(500), error: "try later" })
        expect(yield* queue.depth).toEqual(depthOf({ delayed: 1 }))

        const lease = yield* takeAfterDelay(queue, "take of the nacked job")
        expect([lease.id, lease.delivery]).toEqual(["backoff", 2])
        yield* queue.ack(lease)

        // Without a waiting taker the job shows up as ready once its delay has passed.
        yield* queue.offer("y", { id: "backoff-2" })
        yield* queue.nack(yield* takeNow(queue), { delay: Duration.millis(300) })
        expect(yield* queue.depth).toEqual(depthOf({ delayed: 1 }))
        yield* pause(400)
        expect(yield* depthEventually(queue, depthOf({ ready: 1 }))).toEqual(depthOf({ ready: 1 }))
      })))

    test("a job nacked on its maxDeliveries-th delivery is dead-lettered with its deliveries and the nack's error", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ maxDeliveries: 2 })
        yield* queue.offer({ order: 17 }, { id: "doomed" })
        const first = yield* takeNow(queue)
        yield* queue.nack(first, { error: "boom 1" })
        const second = yield* takeNow(queue)
        expect(second.delivery).toBe(2)
        const before = yield* Clock.currentTimeMillis
        yield* queue.nack(second, { error: "boom 2" })
        const after = yield* Clock.currentTimeMillis
        expect(yield* queue.depth).toEqual(depthOf({ dead: 1 }))

        const letters = yield* queue.deadLetters
        expect(letters).toHaveLength(1)
        expect(letters[0]).toMatchObject({ id: "doomed", payload: { order: 17 }, deliveries: 2, reason: "boom 2" })
        expect(letters[0]!.at).toBeGreaterThanOrEqual(before)
        expect(letters[0]!.at).toBeLessThanOrEqual(after)
        // Dead means not delivered again.
        const taker = yield* Effect.fork(queue.take)
        yield* pause(100)
        yield* expectWaiting(taker)
        yield* Fiber.interrupt(taker)
      })))

    test("deadLetter sends a job to the dead letters at once; they are listed oldest first", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ maxDeliveries: 5 })
        yield* queue.offer("p-a", { id: "a" })
        yield* queue.offer("p-b", { id: "b" })
        yield* queue.offer("p-c", { id: "c" })
        const a = yield* takeNow(queue)
        const b = yield* takeNow(queue)
        yield* queue.nack(b)
        const c = yield* takeNow(queue)
        expect(c.id).toBe("c") // the nacked b went to the back of the line
        const b2 = yield* takeNow(queue)
        expect([b2.id, b2.delivery]).toEqual(["b", 2])

        yield* queue.deadLetter(b2, "bad b")
        yield* advance(10)
        yield* queue.deadLetter(a, "bad a")
        expect(yield* queue.depth).toEqual(depthOf({ leased: 1, dead: 2 }))
        const letters = yield* queue.deadLetters
        expect(letters.map(({ deliveries, id, payload, reason }) => ({ id, payload, deliveries, reason }))).toEqual([
          { id: "b", payload: "p-b", deliveries: 2, reason: "bad b" },
          { id: "a", payload: "p-a", deliveries: 1, reason: "bad a" }
        ])
        expect(letters[0]!.at).toBeLessThanOrEqual(letters[1]!.at)
        yield* queue.ack(c)
        expect(yield* queue.depth).toEqual(depthOf({ dead: 2 }))
      })))

    test("requeue moves a dead letter back to the ready jobs with deliveries from 1 again; false for an unknown id", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ maxDeliveries: 2 })
        yield* queue.offer({ keep: "me" }, { id: "phoenix" })
        yield* queue.offer("other", { id: "other" })
        yield* queue.nack(yield* takeNow(queue))
        yield* queue.deadLetter(yield* takeNow(queue), "other is dead")
        yield* queue.nack(yield* takeNow(queue), { error: "second failure" })
        expect((yield* queue.deadLetters).map((letter) => letter.id)).toEqual(["other", "phoenix"])

        expect(yield* queue.requeue("phoenix")).toBe(true)
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1, dead: 1 }))
        expect((yield* queue.deadLetters).map((letter) => letter.id)).toEqual(["other"])
        expect(yield* queue.requeue("phoenix")).toBe(false) // no longer a dead letter
        expect(yield* queue.requeue("never-offered")).toBe(false)

        const lease = yield* takeNow(queue)
        expect(lease).toMatchObject({ id: "phoenix", payload: { keep: "me" }, delivery: 1 })
        // A requeued job gets the full maxDeliveries again: one nack is not enough to kill it.
        yield* queue.nack(lease)
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1, dead: 1 }))
        expect((yield* takeNow(queue)).delivery).toBe(2)
      })))

    test("at capacity tryOffer fails with QueueFull and offer waits until a take makes room", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ capacity: 2 })
        yield* queue.offer("1", { id: "j1" })
        yield* queue.offer("2", { id: "j2" })
        const refused = yield* Effect.flip(queue.tryOffer("3", { id: "j3" }))
        expect(refused).toBeInstanceOf(QueueFull)
        expect(refused).toMatchObject({ _tag: "QueueFull", capacity: 2 })
        expect(yield* queue.depth).toEqual(depthOf({ ready: 2 }))

        const blocked = yield* Effect.fork(queue.offer("3", { id: "j3" }))
        yield* pause(100)
        yield* expectWaiting(blocked)
        expect(yield* queue.depth).toEqual(depthOf({ ready: 2 }))

        const lease = yield* takeNow(queue)
        expect(lease.id).toBe("j1")
        expect(yield* joinWithin(blocked, "offer after a take made room")).toBe("j3")
        expect(yield* queue.depth).toEqual(depthOf({ ready: 2, leased: 1 }))
        expect((yield* takeNow(queue)).id).toBe("j2")
        expect((yield* takeNow(queue)).id).toBe("j3")
      })))

    test("at capacity, offering an id the queue already holds returns it at once instead of waiting or failing", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ capacity: 2 })
        yield* queue.offer("1", { id: "j1" })
        yield* queue.offer("2", { id: "j2", delay: Duration.millis(500) })
        expect(yield* within(queue.tryOffer("again", { id: "j1" }), "tryOffer of a held id")).toBe("j1")
        expect(yield* within(queue.offer("again", { id: "j2" }), "offer of a held id")).toBe("j2")
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1, delayed: 1 }))
      })))

    test("capacity counts ready and delayed jobs, not leased or dead ones", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ capacity: 2 })
        yield* queue.offer("r", { id: "r" })
        yield* queue.offer("d", { id: "d", delay: Duration.millis(500) })
        expect(yield* Effect.flip(queue.tryOffer("x"))).toMatchObject({ _tag: "QueueFull", capacity: 2 })

        yield* queue.deadLetter(yield* takeNow(queue), "gone") // r: ready -> dead
        expect(yield* queue.tryOffer("l", { id: "l" })).toBe("l")
        yield* takeNow(queue) // l: ready -> leased
        expect(yield* queue.tryOffer("m", { id: "m" })).toBe("m")
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1, leased: 1, delayed: 1, dead: 1 }))
        expect(yield* Effect.flip(queue.tryOffer("y"))).toMatchObject({ _tag: "QueueFull", capacity: 2 })
      })))

    test("a job taken in a Scope that closes without settling it is ready again at once, as delivery 2", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer("work", { id: "released" })
        const first = yield* Effect.scoped(takeNow(queue))
        expect(first.delivery).toBe(1)
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1 }))
        const second = yield* takeNow(queue)
        expect(second).toMatchObject({ id: "released", payload: "work", delivery: 2 })

        yield* queue.ack(second)
        expect(yield* queue.depth).toEqual(emptyDepth)

        // A lease settled inside its Scope stays settled when the Scope closes.
        yield* queue.offer("more", { id: "acked-in-scope" })
        yield* Effect.scoped(Effect.flatMap(takeNow(queue), queue.ack))
        expect(yield* queue.depth).toEqual(emptyDepth)
      })))

    test("interrupting a fiber that holds a lease gives the job back at once, as delivery 2", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        yield* queue.offer("work", { id: "interrupted" })
        const holder = yield* Effect.fork(Effect.scoped(
          Effect.flatMap(queue.take, (lease) => Effect.as(Effect.never, lease))
        ))
        const held = yield* eventually(queue.depth, sameDepth(depthOf({ leased: 1 })))
        expect(held).toEqual(depthOf({ leased: 1 }))

        yield* Fiber.interrupt(holder)
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1 }))
        const lease = yield* takeNow(queue)
        expect(lease).toMatchObject({ id: "interrupted", payload: "work", delivery: 2 })
      })))

    test("interrupting a take that is still waiting loses no job: the next offer goes to the next taker", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        const abandoned = yield* Effect.fork(Effect.scoped(queue.take))
        yield* pause(50)
        yield* Fiber.interrupt(abandoned)
        yield* queue.offer("after", { id: "after" })
        expect(yield* depthEventually(queue, depthOf({ ready: 1 }))).toEqual(depthOf({ ready: 1 }))
        expect(yield* takeNow(queue)).toMatchObject({ id: "after", delivery: 1 })
      })))

    test("a lease not renewed for leaseDuration is taken over: delivery 2, lost completes, onLost listeners are called, settling it fails with LeaseLost", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ leaseDurationMs: 1_000, maxDeliveries: 5 })
        yield* queue.offer({ step: 1 }, { id: "expiring" })
        const stale = yield* takeNow(queue)
        const lostWatch = yield* Effect.fork(stale.lost)
        const heard: Array<string> = []
        stale.onLost(() => heard.push("listening"))
        const stopListening = stale.onLost(() => heard.push("stopped"))
        stopListening()
        yield* pause(500)
        yield* expectWaiting(lostWatch)
        expect(heard).toEqual([])

        yield* pause(1_000) // 1.5 × leaseDuration since the take, no renew
        const takeover = yield* Effect.scoped(Effect.gen(function*() {
          const lease = yield* takeNow(queue)
          expect(lease).toMatchObject({ id: "expiring", payload: { step: 1 }, delivery: 2, enqueuedAt: stale.enqueuedAt })
          yield* joinWithin(lostWatch, "the expired lease's lost")
          expect(heard).toEqual(["listening"])
          stale.onLost(() => heard.push("added after the loss"))
          expect(heard).toEqual(["listening", "added after the loss"])

          const lost = yield* Effect.flip(queue.ack(stale))
          expect(lost).toBeInstanceOf(LeaseLost)
          expect(lost).toMatchObject({ _tag: "LeaseLost", id: "expiring", delivery: 1 })
          expect(yield* Effect.flip(queue.renew(stale))).toBeInstanceOf(LeaseLost)
          expect(yield* Effect.flip(queue.nack(stale))).toBeInstanceOf(LeaseLost)
          expect(yield* Effect.flip(queue.deadLetter(stale, "late"))).toBeInstanceOf(LeaseLost)
          expect(yield* queue.depth).toEqual(depthOf({ leased: 1 }))

          yield* queue.ack(lease)
          return lease
        }))
        expect(takeover.delivery).toBe(2)
        expect(yield* queue.depth).toEqual(emptyDepth)
        expect(yield* queue.deadLetters).toEqual([])
      })))

    test("renew before expiry keeps the lease: 0.6 × lease, renew, 0.6 × lease, and it is still held", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make({ leaseDurationMs: 1_000, maxDeliveries: 5 })
        yield* queue.offer("long job", { id: "renewed" })
        const lease = yield* takeNow(queue)
        const lostWatch = yield* Effect.fork(lease.lost)
        const otherTaker = yield* Effect.fork(queue.take)

        yield* pause(600)
        yield* queue.renew(lease)
        yield* pause(600)
        expect(yield* queue.depth).toEqual(depthOf({ leased: 1 }))
        yield* expectWaiting(otherTaker)
        yield* expectWaiting(lostWatch)

        yield* queue.ack(lease)
        expect(yield* queue.depth).toEqual(emptyDepth)
        yield* Fiber.interrupt(otherTaker)
      })))

    test("acquire leases without a Scope and release makes the job ready at once; an interrupted acquire leases nothing", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        const abandoned = yield* Effect.fork(queue.acquire)
        yield* pause(50)
        yield* expectWaiting(abandoned)
        yield* Fiber.interrupt(abandoned)
        yield* queue.offer("unscoped", { id: "unscoped" })
        expect(yield* depthEventually(queue, depthOf({ ready: 1 }))).toEqual(depthOf({ ready: 1 }))

        const first = yield* within(queue.acquire, "acquire")
        expect(first).toMatchObject({ id: "unscoped", payload: "unscoped", delivery: 1 })
        expect(yield* queue.depth).toEqual(depthOf({ leased: 1 }))
        yield* queue.release(first)
        expect(yield* queue.depth).toEqual(depthOf({ ready: 1 }))
        expect(yield* Effect.flip(queue.ack(first))).toBeInstanceOf(LeaseLost)

        const second = yield* within(queue.acquire, "acquire")
        expect(second).toMatchObject({ id: "unscoped", delivery: 2 })
        yield* queue.ack(second)
        yield* queue.release(second)
        expect(yield* queue.depth).toEqual(emptyDepth)
      })))

    test("a take waiting on an empty queue gets the job offered next", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        const taker = yield* Effect.fork(queue.take)
        yield* pause(50)
        yield* expectWaiting(taker)
        yield* queue.offer("awaited", { id: "awaited" })
        const lease = yield* joinWithin(taker, "waiting take")
        expect(lease).toMatchObject({ id: "awaited", payload: "awaited", delivery: 1 })
        expect(yield* queue.depth).toEqual(depthOf({ leased: 1 }))
      })))

    test("several waiting takers each get a different job", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* make()
        const takers = yield* Effect.forEach([1, 2, 3], () => Effect.fork(queue.take))
        yield* pause(50)
        for (const id of ["w1", "w2", "w3"]) yield* queue.offer(id, { id })
        const leases = yield* Effect.forEach(takers, (taker) => joinWithin(taker, "one of several waiting takes"))
        expect(leases.map((lease) => lease.id).sort()).toEqual(["w1", "w2", "w3"])
        for (const lease of leases) expect(lease.payload).toBe(lease.id)
        expect(yield* queue.depth).toEqual(depthOf({ leased: 3 }))
      })))

    test("metrics: the keel_queue_jobs gauges equal depth once the queue is still; takeovers, failed renewals and dead letters are counted", () =>
      Effect.scoped(Effect.gen(function*() {
        const name = freshName()
        const queue = yield* make({ name, leaseDurationMs: 500, maxDeliveries: 2 })
        // The gauges are read before `depth`, which may refresh them: a backend refreshing them on its own schedule
        // (Redis) gets until `patienceMs` to catch up.
        const expectGauged = (counts: Partial<Depth>) =>
          Effect.gen(function*() {
            const expected = depthOf(counts)
            expect(yield* eventually(gaugedDepth(name), sameDepth(expected))).toEqual(expected)
            expect(yield* queue.depth).toEqual(expected)
          })
        for (const id of ["a", "b", "c"]) yield* queue.offer(id, { id })
        yield* queue.offer("d", { id: "d", delay: Duration.minutes(1) })
        yield* expectGauged({ ready: 3, delayed: 1 })
        const a = yield* takeNow(queue)
        yield* expectGauged({ ready: 2, leased: 1, delayed: 1 })
        yield* queue.ack(a)
        yield* expectGauged({ ready: 2, delayed: 1 })
        yield* queue.nack(yield* takeNow(queue), { delay: Duration.minutes(1) })
        yield* expectGauged({ ready: 1, delayed: 2 })
        yield* queue.deadLetter(yield* takeNow(queue), "cannot succeed")
        yield* expectGauged({ delayed: 2, dead: 1 })
        expect(yield* eventCounts(name)).toEqual({ takeovers: 0, renewalsFailed: 0, deadLettered: 1 })

        yield* queue.requeue("c")
        const stale = yield* within(queue.acquire, "acquire")
        yield* expectGauged({ leased: 1, delayed: 2 })
        yield* pause(750) // 1.5 × leaseDuration, no renew
        const takenOver = yield* takeNow(queue)
        expect([takenOver.id, takenOver.delivery]).toEqual(["c", 2])
        yield* expectGauged({ leased: 1, delayed: 2 })
        expect(yield* Effect.flip(queue.renew(stale))).toBeInstanceOf(LeaseLost)
        yield* queue.nack(takenOver) // its maxDeliveries-th delivery: dead-lettered
        yield* expectGauged({ delayed: 2, dead: 1 })
        expect(yield* eventCounts(name)).toEqual({ takeovers: 1, renewalsFailed: 1, deadLettered: 2 })
      })))

    test.prop(
      "random offer/take/ack/nack/deadLetter/requeue sequences account for every offered job exactly once",
      {
        capacity: fc.integer({ min: 1, max: 4 }),
        // size "max": without it fast-check keeps arrays short, and jobs would rarely reach the dead letters.
        operations: fc.array(operationArbitrary, { minLength: 10, maxLength: 50, size: "max" })
      },
      ({ capacity, operations }) => Effect.scoped(runScenario(backend, capacity, operations)),
      PropertyRuns.fastCheck(20_250_301)
    )
  })
}

// ---------------------------------------------------------------------------------------------------------
// Property: every offered job ends exactly once, acked or dead, and depth matches a model at every step.

const ids = ["p0", "p1", "p2", "p3"] as const
const maxDelayMs = 50
const propertyMaxAttempts = 2

type Operation =
  | { readonly _tag: "offer"; readonly id: string; readonly delayMs: number; readonly blocking: boolean }
  | { readonly _tag: "take" }
  | { readonly _tag: "ack"; readonly pick: number }
  | { readonly _tag: "nack"; readonly pick: number; readonly delayMs: number }
  | { readonly _tag: "deadLetter"; readonly pick: number }
  | { readonly _tag: "requeue"; readonly id: string }
  | { readonly _tag: "tick"; readonly ms: number }

const delayArbitrary = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: maxDelayMs }))

const operationArbitrary: fc.Arbitrary<Operation> = fc.oneof(
  {
    arbitrary: fc.record({
      _tag: fc.constant("offer" as const),
      id: fc.constantFrom(...ids),
      delayMs: delayArbitrary,
      blocking: fc.boolean()
    }),
    weight: 3
  },
  { arbitrary: fc.record({ _tag: fc.constant("take" as const) }), weight: 4 },
  { arbitrary: fc.record({ _tag: fc.constant("ack" as const), pick: fc.nat(7) }), weight: 1 },
  { arbitrary: fc.record({ _tag: fc.constant("nack" as const), pick: fc.nat(7), delayMs: delayArbitrary }), weight: 3 },
  { arbitrary: fc.record({ _tag: fc.constant("deadLetter" as const), pick: fc.nat(7) }), weight: 1 },
  { arbitrary: fc.record({ _tag: fc.constant("requeue" as const), id: fc.constantFrom(...ids) }), weight: 2 },
  { arbitrary: fc.record({ _tag: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 60 }) }), weight: 1 }
)

interface ModelJob {
  readonly key: string
  readonly payload: Json
  state: "waiting" | "leased" | "dead"
  deliveries: number
  reason: string
}

const runScenario = (backend: ContractBackend, capacity: number, operations: ReadonlyArray<Operation>) =>
  Effect.gen(function*() {
    // A long lease: this property is about accounting, not expiry, and must hold on real time too.
    const queue = yield* backend.make({
      name: freshName(),
      capacity,
      leaseDurationMs: 60_000,
      maxDeliveries: propertyMaxAttempts
    })
    const ledger = yield* Ledger.make<string, "acked" | "dead">()
    const jobs = new Map<string, ModelJob>()
    const deadOrder: Array<string> = []
    const leases: Array<Lease> = []
    let generation = 0

    const count = (state: ModelJob["state"]) => [...jobs.values()].filter((job) => job.state === state).length
    const pickLease = (pick: number): Lease | undefined =>
      leases.length === 0 ? undefined : leases.splice(pick % leases.length, 1)[0]
    const toDead = (id: string, reason: string) => {
      const job = jobs.get(id)!
      job.state = "dead"
      job.reason = reason
      deadOrder.push(id)
    }
    const acked = (lease: Lease) =>
      Effect.gen(function*() {
        yield* queue.ack(lease)
        yield* ledger.settle(jobs.get(lease.id)!.key, "acked")
        jobs.delete(lease.id)
      })
    const take = Effect.gen(function*() {
      const lease = yield* takeNow(queue)
      const job = jobs.get(lease.id)
      expect(job?.state).toBe("waiting")
      expect([lease.payload, lease.delivery]).toEqual([job!.payload, job!.deliveries + 1])
      job!.state = "leased"
      job!.deliveries++
      leases.push(lease)
    })

    for (const operation of operations) {
      switch (operation._tag) {
        case "offer": {
          const payload: Json = { id: operation.id, generation }
          const options = operation.delayMs > 0
            ? { id: operation.id, delay: Duration.millis(operation.delayMs) }
            : { id: operation.id }
          const held = jobs.has(operation.id)
          const full = count("waiting") >= capacity
          if (!held && full) {
            expect(Either.getLeft(yield* within(Effect.either(queue.tryOffer(payload, options)), "tryOffer"))).toEqual(
              Option.some(new QueueFull({ capacity }))
            )
            break
          }
          const offer = operation.blocking ? queue.offer : queue.tryOffer
          // Never waits: the queue has room, or already holds the id.
          expect(yield* within(offer(payload, options), "offer")).toBe(operation.id)
          if (!held) {
            const key = `${operation.id}#${generation++}`
            jobs.set(operation.id, { key, payload, state: "waiting", deliveries: 0, reason: "" })
            yield* ledger.accept(key)
          }
          break
        }
        case "take": {
          if ((yield* queue.depth).ready > 0) yield* take
          break
        }
        case "ack": {
          const lease = pickLease(operation.pick)
          if (lease !== undefined) yield* acked(lease)
          break
        }
        case "nack": {
          const lease = pickLease(operation.pick)
          if (lease === undefined) break
          const error = `failed attempt ${lease.delivery}`
          yield* queue.nack(
            lease,
            operation.delayMs > 0 ? { error, delay: Duration.millis(operation.delayMs) } : { error }
          )
          if (lease.delivery >= propertyMaxAttempts) toDead(lease.id, error)
          else jobs.get(lease.id)!.state = "waiting"
          break
        }
        case "deadLetter": {
          const lease = pickLease(operation.pick)
          if (lease === undefined) break
          yield* queue.deadLetter(lease, "given up")
          toDead(lease.id, "given up")
          break
        }
        case "requeue": {
          const job = jobs.get(operation.id)
          const isDead = job?.state === "dead"
          expect(yield* queue.requeue(operation.id)).toBe(isDead)
          if (isDead) {
            job.state = "waiting"
            job.deliveries = 0
            deadOrder.splice(deadOrder.indexOf(operation.id), 1)
          }
          break
        }
        case "tick": {
          yield* backend.advance(operation.ms)
          break
        }
      }

      const depth = yield* queue.depth
      expect({ waiting: depth.ready + depth.delayed, leased: depth.leased, dead: depth.dead }).toEqual({
        waiting: count("waiting"),
        leased: count("leased"),
        dead: count("dead")
      })
      expect((yield* queue.deadLetters).map(({ deliveries, id, reason }) => ({ id, deliveries, reason }))).toEqual(
        deadOrder.map((id) => ({ id, deliveries: jobs.get(id)!.deliveries, reason: jobs.get(id)!.reason }))
      )
    }

    // Settle everything: ack the leases, let every delay pass, take and ack what waits; dead letters stay.
    for (const lease of leases.splice(0)) yield* acked(lease)
    yield* backend.advance(maxDelayMs + 10)
    while (count("waiting") > 0) {
      yield* take
      yield* acked(leases.pop()!)
    }
    for (const id of deadOrder) yield* ledger.settle(jobs.get(id)!.key, "dead")
    expect(yield* queue.depth).toEqual(depthOf({ dead: deadOrder.length }))
    const summary = yield* ledger.check
    expect(summary.settled).toBe(summary.accepted)
  })

/** Options every backend refuses, from valid ones: counts below 1 or fractional, a zero or infinite lease. */
export const invalidQueueOptions = <O extends QueueOptions>(valid: O): ReadonlyArray<O> => [
  { ...valid, capacity: 0 },
  { ...valid, capacity: 1.5 },
  { ...valid, maxDeliveries: 0 },
  { ...valid, maxDeadLetters: 0 },
  { ...valid, leaseDuration: Duration.zero },
  { ...valid, leaseDuration: Duration.infinity }
]

/** `make` dies with each of `invalid` and builds a queue with `valid`. */
export const expectOptionsChecked = <O>(
  make: (options: O) => Effect.Effect<JobQueueService, never, Scope.Scope>,
  valid: O,
  invalid: ReadonlyArray<O>
) =>
  Effect.gen(function*() {
    for (const options of invalid) {
      const exit = yield* Effect.exit(Effect.scoped(make(options)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }
    expect(Exit.isSuccess(yield* Effect.exit(Effect.scoped(make(valid))))).toBe(true)
  })

/** The options `expectLayerService` expects the layer under test to be built with. */
export const layerOptions = { capacity: 3, leaseDuration: "2 seconds", maxDeliveries: 4 } as const

/** The `JobQueue` a backend's layer provides has the options it was given and serves a job end to end. */
export const expectLayerService = Effect.gen(function*() {
  const queue = yield* JobQueue
  expect([queue.capacity, Duration.toMillis(queue.leaseDuration), queue.maxDeliveries]).toEqual([3, 2_000, 4])
  yield* queue.offer({ via: "layer" }, { id: "l1" })
  const lease = yield* Effect.scoped(Effect.tap(queue.take, queue.ack))
  expect(lease).toMatchObject({ id: "l1", payload: { via: "layer" }, delivery: 1 })
  expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
})
