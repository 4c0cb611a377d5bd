/**
 * The shared deadline queue under timeouts: every deadline not cancelled fires once, at its instant on the
 * caller's Clock, and a cancelled one never; with nothing live no wake-up stays armed (on the live Clock
 * that would be a timer keeping the process alive). Virtual time, fixed seeds.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, FastCheck as fc, TestClock } from "effect"
import { PropertyRuns } from "keel/testing"
import * as DeadlineQueue from "../../../src/internal/deadlineQueue.js"

const plan = {
  deadlines: fc.array(
    fc.record({ delay: fc.integer({ min: 0, max: 2_000 }), cancelAfter: fc.option(fc.integer({ min: 0, max: 2_500 })) }),
    { minLength: 1, maxLength: 60 }
  ),
  step: fc.integer({ min: 50, max: 400 })
}

describe("DeadlineQueue", () => {
  it.effect.prop(
    "each deadline fires once at its instant unless cancelled before it; nothing stays armed after",
    plan,
    ({ deadlines, step }) =>
      Effect.gen(function*() {
        const clock = yield* Effect.clock
        const start = clock.unsafeCurrentTimeMillis()
        const firedAt = new Map<number, Array<number>>()
        const entries = deadlines.map(({ delay }, index) =>
          DeadlineQueue.schedule(clock, delay, () => {
            firedAt.set(index, [...(firedAt.get(index) ?? []), clock.unsafeCurrentTimeMillis() - start])
          })
        )
        // Time moves in steps; a deadline whose cancellation falls in a step is cancelled before the step runs.
        const cancelled = new Set<number>()
        for (let now = 0; now <= 2_600; now += step) {
          deadlines.forEach(({ cancelAfter }, index) => {
            if (cancelAfter !== null && cancelAfter <= now && !firedAt.has(index)) {
              DeadlineQueue.cancel(entries[index]!)
              cancelled.add(index)
            }
          })
          yield* TestClock.adjust(step)
        }
        deadlines.forEach(({ delay }, index) => {
          if (cancelled.has(index)) expect(firedAt.get(index), `deadline ${index}`).toBeUndefined()
          else expect(firedAt.get(index), `deadline ${index}`).toEqual([delay])
        })
        expect(Chunk.toReadonlyArray(yield* TestClock.sleeps())).toEqual([])
      }),
    PropertyRuns.fastCheck(20261207)
  )

  it.effect("many cancelled deadlines are compacted away; the live ones still fire on time, and none is left armed", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const fired: Array<number> = []
      const entries = Array.from({ length: 5_000 }, (_, index) =>
        DeadlineQueue.schedule(clock, 1_000 + index, () => fired.push(index)))
      entries.forEach((entry, index) => {
        if (index % 1_000 !== 999) DeadlineQueue.cancel(entry)
      })
      yield* TestClock.adjust(10_000)
      expect(fired).toEqual([999, 1_999, 2_999, 3_999, 4_999])
      DeadlineQueue.cancel(entries[999]!) // fired already: nothing to do
      expect(Chunk.toReadonlyArray(yield* TestClock.sleeps())).toEqual([])
    }))

  it.effect("an earlier deadline scheduled after a later one re-arms the wake-up for it", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const fired: Array<string> = []
      DeadlineQueue.schedule(clock, 5_000, () => fired.push("late"))
      DeadlineQueue.schedule(clock, 100, () => fired.push("early"))
      yield* TestClock.adjust(100)
      expect(fired).toEqual(["early"])
      yield* TestClock.adjust(4_900)
      expect(fired).toEqual(["early", "late"])
    }))
})
