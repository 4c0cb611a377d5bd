/**
 * timeout — Tower's TimeoutLayer: a call that takes longer than `after` is interrupted (its finalizers
 * run before the error is returned) and fails with `Timeout { after }`. A caller's deadline (see
 * `deadline`) that is sooner than `after` wins, so a timeout never outlives the call it belongs to.
 *
 * `failAfter` is the mechanism, shared with `deadline`. Effect's `timeoutFail` races two forked fibers and
 * arms a timer on every call; here the call starts at once in a fiber of its own, and a call that has
 * already ended when it first yields (a cache hit, a validation failure) needs no timer and does not even
 * suspend its caller. A call whose effect is already its result (`Effect.succeed(answer)`: a health
 * check, a constant) needs no fiber either. Only a call still running races the clock.
 *
 * The call runs in a fiber of its own, as across any service boundary: FiberRef changes it makes (other
 * than through `Effect.locally`, which undoes them anyway) stay with it and are not merged back into the
 * caller. Merging them, as `Fiber.join` does, would cost more than the rest of the middleware together.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import type * as Context from "effect/Context"
import { Timeout } from "../Errors.js"
import { remainingFor } from "./deadline.js"
import type { Middleware, Service } from "./Middleware.js"

// The call's fiber is interruptible whatever the caller's region, and is not counted in Effect's fiber
// metrics (effect_fiber_*): it is the call itself, not a task of the caller's.
const callFlags = RuntimeFlags.disable(Runtime.defaultRuntime.runtimeFlags, RuntimeFlags.RuntimeMetrics)

/**
 * Runs `effect` (not already its result: callers answer those themselves) for `caller`, interrupting it
 * after `limit` (waiting for its finalizers) and failing with `onTimeout()`. The effect runs in a fiber
 * started on the spot with the caller's context and fiber refs; interrupting the caller interrupts it.
 */
const runFor = <A, E, R, E2>(
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
 * and no timer. The mechanism of `timeout` and `deadline`, which ignores the caller's deadline; use those
 * middleware rather than this.
 */
export const failAfter = <E2>(limit: Duration.Duration, onTimeout: () => E2) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
  Exit.isExit(effect) ? effect : Effect.withFiberRuntime((caller) => runFor(caller, limit, onTimeout, effect))

/**
 * The timeout middleware (Tower's TimeoutLayer): a call that takes longer than `after` is interrupted,
 * its finalizers run, and it fails with `Timeout { after }`. When the caller's deadline (see `deadline`)
 * is sooner, that wins, and `after` in the error is the time that was left. The service's own errors pass
 * through unchanged. The call runs in a fiber of its own, so FiberRef changes it makes stay with it. Keeps
 * no state: it needs no Scope, and one value serves every stack.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const slowLookup = (id: number) => Effect.as(Effect.sleep("3 seconds"), `user ${id}`)
 *
 * const program = Middleware.timeout("1 second")(slowLookup)(7).pipe(
 *   Effect.catchTag("Timeout", (error) => Effect.succeed(error.message)) // "timed out after 1s"
 * )
 * ```
 */
export const timeout = (after: Duration.DurationInput): Middleware<Timeout> => {
  const limit = Duration.decode(after)
  const timedOut = () => new Timeout({ after: limit })
  return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Timeout, R> => (request) => {
    // The call's Effect is made when the timed service is called (as `tap`, `filter` and `fallback` do), so a
    // timed Effect run again runs the same call; a service that throws while making it gives a defect. A call
    // that is already its result is returned as it is, before looking at the caller at all.
    let call: Effect.Effect<Res, E, R>
    try {
      call = service(request)
    } catch (defect) {
      return Effect.die(defect)
    }
    if (Exit.isExit(call)) return call
    return Effect.withFiberRuntime((caller) => {
      const left = remainingFor(caller)
      if (Option.isNone(left) || Duration.greaterThanOrEqualTo(left.value, limit)) {
        return runFor(caller, limit, timedOut, call)
      }
      const effective = left.value
      return runFor(caller, effective, () => new Timeout({ after: effective }), call)
    })
  }
}
