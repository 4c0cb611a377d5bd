/**
 * The current call's deadline: an absolute instant (Clock time, in ms) in a FiberRef, which the `deadline`
 * middleware and `within` narrow and `timeout`, `retry`, `hedge` and a waiting `rateLimit` read, so that
 * nested calls never outlive their caller. Set it only through `within`, which never widens it.
 */
import * as Duration from "effect/Duration"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as Fiber from "effect/Fiber"
import { clockOf } from "./fiberClock.js"

/** The instant (Clock time, in ms) by which the current call must end; none when no caller set one. */
export const currentDeadline: FiberRef.FiberRef<Option.Option<number>> = FiberRef.unsafeMake(Option.none())

/**
 * Time left before the deadline of the call `fiber` is running (zero once it has passed); none when there
 * is no deadline. The synchronous form of `remaining`, for middleware that already hold their fiber.
 */
export const remainingFor = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Option.Option<Duration.Duration> => {
  const deadline = fiber.getFiberRef(currentDeadline)
  if (Option.isNone(deadline)) return Option.none()
  const now = clockOf(fiber).unsafeCurrentTimeMillis()
  return Option.some(Duration.millis(Math.max(0, deadline.value - now)))
}
