/**
 * The embedded JobQueue against the JobQueue contract (test/services/JobQueueContract.ts) on TestClock, plus
 * what only the memory backend promises: dead letters are bounded by `maxDeadLetters` (the oldest is dropped),
 * nonsensical options die at construction, and `layer` provides the JobQueue service.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import * as MemoryJobQueue from "../../../layers/memory/JobQueue.js"
import {
  describeJobQueueContract,
  expectLayerService,
  expectOptionsChecked,
  invalidQueueOptions,
  layerOptions
} from "../../services/JobQueueContract.js"

describeJobQueueContract("memory", {
  make: (options) =>
    MemoryJobQueue.make({
      name: options.name,
      capacity: options.capacity,
      leaseDuration: Duration.millis(options.leaseDurationMs),
      maxDeliveries: options.maxDeliveries
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
        maxDeliveries: 3,
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
      expect(yield* queue.take).toMatchObject({ id: "a", payload: "a again", delivery: 1 })
    }))

  it.effect("nonsensical options die: capacity, maxDeliveries, maxDeadLetters below 1 or fractional, a zero lease", () =>
    Effect.gen(function*() {
      const valid: MemoryJobQueue.Options = { capacity: 2, leaseDuration: "1 second", maxDeliveries: 3 }
      yield* expectOptionsChecked(MemoryJobQueue.make, valid, invalidQueueOptions(valid))
    }))

  it.effect("layer provides the JobQueue service with the options it was given", () =>
    expectLayerService.pipe(Effect.provide(MemoryJobQueue.layer(layerOptions))))
})
