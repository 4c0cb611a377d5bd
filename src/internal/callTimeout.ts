/**
 * Bounding one call in time: the mechanism of the `timeout` and `deadline` middleware and of a worker
 * pool's attempt timeout.
 *
 * Effect's `timeoutFail` races two forked fibers and arms a timer on every call; here the call starts at once
 * in a fiber of its own, and a call that has already ended when it first yields (a cache hit, a validation
 * failure) needs no timer and does not even suspend its caller. A call whose effect is already its result
 * (`Effect.succeed(answer)`: a health check, a constant) needs no fiber either. A call still running waits
 * for its fiber's end while its deadline sits in the shared deadline queue (one timer for all calls).
 *
 * The call runs in a fiber of its own, as across any service boundary: FiberRef changes it makes (other
 * than through `Effect.locally`, which undoes them anyway) stay with it and are not merged back into the
 * caller. Merging them, as `Fiber.join` does, would cost more than the rest of the middleware together.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as DeadlineQueue from "./deadlineQueue.js"
import { event } from "./tracing.js"

// The call's fiber is interruptible whatever the caller's region, and is not counted in Effect's fiber
// metrics (effect_fiber_*): it is the call itself, not a task of the caller's.
const callFlags = RuntimeFlags.disable(Runtime.defaultRuntime.runtimeFlags, RuntimeFlags.RuntimeMetrics)

/**
 * Runs `effect` (not already its result: callers answer those themselves) for `caller`, interrupting it
 * after `limit` on the caller's Clock (waiting for its finalizers) and failing with `onTimeout()`. The effect
 * runs in a fiber started on the spot with the caller's context and fiber refs; interrupting the caller
 * interrupts it.
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
  const clock = Context.get(caller.getFiberRef(DefaultServices.currentServices), Clock.Clock)
  return Effect.async<A, E | E2>((resume) => {
    let timedOut = false
    const deadline = DeadlineQueue.schedule(clock, Duration.toMillis(limit), () => {
      timedOut = true
      event(caller, "keel.timeout", { "keel.timeout_ms": Duration.toMillis(limit) })
      call.unsafeInterruptAsFork(caller.id())
    })
    call.addObserver((exit) => {
      DeadlineQueue.cancel(deadline)
      resume(timedOut ? Effect.fail(onTimeout()) : exit)
    })
    // The caller interrupted: the call is interrupted too, and its finalizers awaited.
    return Effect.suspend(() => {
      DeadlineQueue.cancel(deadline)
      return Fiber.interrupt(call)
    })
  })
}

/**
 * `effect`, interrupted after `limit` (its finalizers run first) and failed with `onTimeout()`. An effect
 * that is already its result (a constant answer) cannot run late: it is returned as it is, with no fiber
 * and no timer. Ignores the caller's deadline: `timeout` and `deadline` read it.
 */
export const failAfter = <E2>(limit: Duration.Duration, onTimeout: () => E2) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
  Exit.isExit(effect) ? effect : Effect.withFiberRuntime((caller) => runFor(caller, limit, onTimeout, effect))
