/**
 * Bounding one call in time: the mechanism of the `timeout` and `deadline` middleware.
 *
 * Effect's `timeoutFail` races two forked fibers and arms a timer on every call; here the call starts at once
 * in a fiber of its own, and a call that has already ended when it first yields (a cache hit, a validation
 * failure) needs no timer and does not even suspend its caller. A call whose effect is already its result
 * (`Effect.succeed(answer)`: a health check, a constant) needs no fiber either. Only a call still running
 * races the clock.
 *
 * The call runs in a fiber of its own, as across any service boundary: FiberRef changes it makes (other
 * than through `Effect.locally`, which undoes them anyway) stay with it and are not merged back into the
 * caller. Merging them, as `Fiber.join` does, would cost more than the rest of the middleware together.
 */
import type * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"

// The call's fiber is interruptible whatever the caller's region, and is not counted in Effect's fiber
// metrics (effect_fiber_*): it is the call itself, not a task of the caller's.
const callFlags = RuntimeFlags.disable(Runtime.defaultRuntime.runtimeFlags, RuntimeFlags.RuntimeMetrics)

/**
 * Runs `effect` (not already its result: callers answer those themselves) for `caller`, interrupting it
 * after `limit` (waiting for its finalizers) and failing with `onTimeout()`. The effect runs in a fiber
 * started on the spot with the caller's context and fiber refs; interrupting the caller interrupts it.
 */
export const runFor = <A, E, R, E2>(
  caller: Fiber.RuntimeFiber<unknown, unknown>,
  limit: Duration.Duration,
  onTimeout: () => E2,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | E2, R> => {
  const runtime = Runtime.make({
    context: caller.currentContext as Context.Context<R>,
    fiberRefs: caller.getFiberRefs(),
    runtimeFlags: callFlags
  })
  const call = Runtime.runFork(runtime)(effect)
  const ended = call.unsafePoll()
  if (ended !== null) return ended
  // Both sides interruptible, so the loser stops at once even when the caller runs uninterruptibly.
  return Effect.raceFirst(
    Effect.interruptible(Fiber.await(call)),
    Effect.interruptible(Effect.as(Effect.sleep(limit), null))
  ).pipe(
    Effect.flatMap((exit): Effect.Effect<A, E | E2> =>
      exit === null ? Effect.zipRight(Fiber.interrupt(call), Effect.fail(onTimeout())) : exit
    ),
    Effect.onInterrupt(() => Fiber.interrupt(call))
  )
}

/**
 * `effect`, interrupted after `limit` (its finalizers run first) and failed with `onTimeout()`. An effect
 * that is already its result (a constant answer) cannot run late: it is returned as it is, with no fiber
 * and no timer. Ignores the caller's deadline: `timeout` and `deadline` read it.
 */
export const failAfter = <E2>(limit: Duration.Duration, onTimeout: () => E2) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
  Exit.isExit(effect) ? effect : Effect.withFiberRuntime((caller) => runFor(caller, limit, onTimeout, effect))
