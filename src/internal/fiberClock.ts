/**
 * The Clock a fiber runs with, read synchronously: for middleware and bookkeeping that already hold their
 * fiber (inside `Effect.withFiberRuntime`) and would otherwise go through `Clock.clockWith` for one reading.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Fiber from "effect/Fiber"

/** The Clock of `fiber`'s services: TestClock in tests, the live one otherwise. */
export const clockOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Clock.Clock =>
  Context.get(fiber.currentDefaultServices, Clock.Clock)
