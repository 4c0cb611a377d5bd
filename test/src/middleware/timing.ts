/**
 * Helpers for middleware tests on TestClock: let fibers settle, take the result of a call that must have
 * finished (failing the test instead of hanging it when it has not), and move the clock to an instant.
 */
import { Clock, Effect, Fiber, TestClock } from "effect"
import { expect } from "@effect/vitest"

/** Lets every fiber run until it suspends (a wake-up or a hand-over takes a few scheduler hops). */
export const settle = Effect.repeatN(Effect.yieldNow(), 10)

/**
 * How a fiber that must have finished by now ended. One still running is interrupted and fails the test,
 * so a wrong implementation fails it instead of hanging it.
 */
export const exitNow = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
  Effect.gen(function*() {
    for (let step = 0; step < 200 && fiber.unsafePoll() === null; step++) yield* Effect.yieldNow()
    const exit = fiber.unsafePoll()
    if (exit === null) {
      yield* Fiber.interrupt(fiber)
      return expect.fail("the call was still waiting when it should have finished")
    }
    return exit
  })

/** The result of a fiber that must have finished by now (see `exitNow`). */
export const finished = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) => Effect.flatten(exitNow(fiber))

/** Runs `effect`, which must finish without time passing or anyone else acting (see `exitNow`). */
export const atOnce = <A, E>(effect: Effect.Effect<A, E>) => Effect.flatMap(Effect.fork(effect), finished)

/**
 * Moves the TestClock to `target`. TestClock wakes the sleepers one instant at a time and, before each
 * step, waits until every fiber of the test has suspended, so each instant's reactions run at that
 * instant. Each step costs a few real timer ticks, so tests keep their instants few.
 */
export const advanceTo = (target: number) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => target > now ? TestClock.setTime(target) : settle)
