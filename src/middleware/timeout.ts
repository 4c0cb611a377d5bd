/**
 * timeout — Tower's TimeoutLayer: a call that takes longer than `after` is interrupted (its finalizers
 * run before the error is returned) and fails with `Timeout { after }`. A caller's deadline (see
 * `deadline`) that is sooner than `after` wins, so a timeout never outlives the call it belongs to.
 *
 * `failAfter` is the mechanism, shared with `deadline`. Effect's `timeoutFail` races two forked fibers and
 * arms a timer on every call; here the call starts at once in a fiber of its own, and a call that has
 * already ended when it first yields (a cache hit, a validation failure) needs no timer at all. Only a
 * call still running races the clock.
 */
import { Duration, Effect, Fiber, Option, Runtime } from "effect"
import type { Context } from "effect"
import { Timeout } from "../Errors.js"
import { remaining } from "./deadline.js"
import type { Middleware, Service } from "./Middleware.js"

/**
 * Runs `effect`, interrupting it after `limit` (waiting for its finalizers) and failing with `onTimeout()`.
 * The effect runs in a fiber started on the spot with the caller's context and fiber refs; interrupting
 * the caller interrupts it.
 */
export const failAfter = <E2>(limit: Duration.Duration, onTimeout: () => E2) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
  Effect.withFiberRuntime<A, E | E2, R>((caller) => {
    const runtime = Runtime.make({
      context: caller.currentContext as Context.Context<R>,
      fiberRefs: caller.getFiberRefs(),
      runtimeFlags: Runtime.defaultRuntime.runtimeFlags
    })
    const call = Runtime.runFork(runtime)(effect)
    if (call.unsafePoll() !== null) return Fiber.join(call)
    // Both sides interruptible, so the loser stops at once even when the caller runs uninterruptibly.
    return Effect.raceFirst(
      Effect.interruptible(Effect.as(Fiber.await(call), false)),
      Effect.interruptible(Effect.as(Effect.sleep(limit), true))
    ).pipe(
      Effect.flatMap((timedOut): Effect.Effect<A, E | E2> =>
        timedOut ? Effect.zipRight(Fiber.interrupt(call), Effect.fail(onTimeout())) : Fiber.join(call)
      ),
      Effect.onInterrupt(() => Fiber.interrupt(call))
    )
  })

export const timeout = (after: Duration.DurationInput): Middleware<Timeout> => {
  const limit = Duration.decode(after)
  return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Timeout, R> => (request) =>
    Effect.flatMap(remaining, (left) => {
      const effective = Option.match(left, {
        onNone: () => limit,
        onSome: (budget) => Duration.min(budget, limit)
      })
      return failAfter(effective, () => new Timeout({ after: effective }))(service(request))
    })
}
