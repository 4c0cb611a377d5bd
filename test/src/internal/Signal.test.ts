import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as Signal from "../../../src/internal/Signal.js"

describe("Signal", () => {
  it.effect("fibers waiting on it resume when it fires, and one awaiting after that returns at once", () =>
    Effect.gen(function*() {
      const signal = Signal.make()
      const waiters = yield* Effect.forEach([1, 2], () => Effect.fork(signal.await))
      yield* Effect.yieldNow()
      expect(yield* Effect.forEach(waiters, Fiber.poll)).toEqual([expect.objectContaining({ _tag: "None" }), expect.objectContaining({ _tag: "None" })])
      expect(signal.fired()).toBe(false)
      signal.fire()
      yield* Effect.forEach(waiters, Fiber.join)
      expect(signal.fired()).toBe(true)
      yield* signal.await
    }))

  it("listeners run once, in order, when it fires; a stopped one never; one added later at once", () => {
    const signal = Signal.make()
    const heard: Array<string> = []
    signal.listen(() => heard.push("first"))
    const stop = signal.listen(() => heard.push("stopped"))
    signal.listen(() => heard.push("second"))
    stop()
    expect(heard).toEqual([])
    signal.fire()
    signal.fire()
    expect(heard).toEqual(["first", "second"])
    signal.listen(() => heard.push("late"))
    expect(heard).toEqual(["first", "second", "late"])
  })

  it.effect("an interrupted waiter stops listening", () =>
    Effect.gen(function*() {
      const signal = Signal.make()
      const waiter = yield* Effect.fork(signal.await)
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiter)
      const heard: Array<string> = []
      signal.listen(() => heard.push("after"))
      signal.fire()
      expect(heard).toEqual(["after"])
      expect((yield* Fiber.await(waiter))._tag).toBe("Failure")
    }))
})
