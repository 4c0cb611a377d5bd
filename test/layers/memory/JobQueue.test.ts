/**
 * The embedded JobQueue against the JobQueue contract (test/services/JobQueueContract.ts) on TestClock, plus
 * what only the memory backend promises: dead letters are bounded by `maxDeadLetters` (the oldest is dropped),
 * nonsensical options die at construction, and `layer` provides the JobQueue service.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, TestClock } from "effect"
import * as MemoryJobQueue from "../../../layers/memory/JobQueue.js"
import { JobQueue } from "../../../services/JobQueue.js"
import { describeJobQueueContract } from "../../services/JobQueueContract.js"

describeJobQueueContract("memory", {
  make: (options) =>
    MemoryJobQueue.make({
      capacity: options.capacity,
      leaseDuration: Duration.millis(options.leaseDurationMs),
      maxAttempts: options.maxAttempts
    }),
  advance: (ms) => TestClock.adjust(Duration.millis(ms)),
  test: it.effect
})

describe("MemoryJobQueue", () => {
  it.scoped("past maxDeadLetters the oldest dead letter is dropped, and can no longer be requeued", () =>
    Effect.gen(function*() {
      const queue = yield* MemoryJobQueue.make({
        capacity: 10,
        leaseDuration: "1 second",
        maxAttempts: 3,
        maxDeadLetters: 2
      })
      for (const id of ["a", "b", "c"]) yield* queue.offer(id, { id })
      for (const reason of ["bad a", "bad b", "bad c"]) {
        yield* queue.deadLetter(yield* queue.take, reason)
        yield* TestClock.adjust(10)
      }
      const letters = yield* queue.deadLetters
      expect(letters.map(({ id, reason }) => [id, reason])).toEqual([["b", "bad b"], ["c", "bad c"]])
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 2 })
      expect(yield* queue.requeue("a")).toBe(false)
      // The dropped job is forgotten altogether: its id makes a new job.
      yield* queue.offer("a again", { id: "a" })
      expect(yield* queue.depth).toEqual({ ready: 1, leased: 0, delayed: 0, dead: 2 })
      expect(yield* queue.take).toMatchObject({ id: "a", payload: "a again", attempt: 1 })
    }))

  it.effect("nonsensical options die: capacity, maxAttempts, maxDeadLetters below 1 or fractional, a zero lease", () =>
    Effect.gen(function*() {
      const valid: MemoryJobQueue.Options = { capacity: 2, leaseDuration: "1 second", maxAttempts: 3 }
      const invalid: ReadonlyArray<MemoryJobQueue.Options> = [
        { ...valid, capacity: 0 },
        { ...valid, capacity: 1.5 },
        { ...valid, maxAttempts: 0 },
        { ...valid, maxDeadLetters: 0 },
        { ...valid, leaseDuration: Duration.zero },
        { ...valid, leaseDuration: Duration.infinity }
      ]
      for (const options of invalid) {
        const exit = yield* Effect.exit(Effect.scoped(MemoryJobQueue.make(options)))
        expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      }
      expect(Exit.isSuccess(yield* Effect.exit(Effect.scoped(MemoryJobQueue.make(valid))))).toBe(true)
    }))

  it.effect("layer provides the JobQueue service with the options it was given", () =>
    Effect.gen(function*() {
      const queue = yield* JobQueue
      expect([queue.capacity, Duration.toMillis(queue.leaseDuration), queue.maxAttempts]).toEqual([3, 2_000, 4])
      yield* queue.offer({ via: "layer" }, { id: "l1" })
      const lease = yield* Effect.scoped(Effect.tap(queue.take, queue.ack))
      expect(lease).toMatchObject({ id: "l1", payload: { via: "layer" }, attempt: 1 })
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
    }).pipe(Effect.provide(MemoryJobQueue.layer({ capacity: 3, leaseDuration: "2 seconds", maxAttempts: 4 }))))
})
