/**
 * timeout — Tower's TimeoutLayer: a call that takes longer than `after` is interrupted (its finalizers
 * run before the error is returned) and fails with `Timeout { after }`. A caller's deadline (see
 * `deadline`) that is sooner than `after` wins, so a timeout never outlives the call it belongs to. How one
 * call is bounded without a timer or a fiber where none is needed is `internal/callTimeout`'s story.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { Timeout } from "../Errors.js"
import { runFor } from "../internal/callTimeout.js"
import { remainingFor } from "../internal/deadline.js"
import * as Validation from "../internal/Validation.js"
import type { Middleware, Service } from "./Middleware.js"

/** What `timeout` takes. */
export interface TimeoutOptions {
  /** How long a call may take; longer than zero (infinite: no limit but the caller's deadline). */
  readonly after: Duration.DurationInput
}

/**
 * The timeout middleware (Tower's TimeoutLayer): a call that takes longer than `after` is interrupted,
 * its finalizers run, and it fails with `Timeout { after }`. When the caller's deadline (see `deadline`)
 * is sooner, that wins, and `after` in the error is the time that was left. The service's own errors pass
 * through unchanged. The call runs in a fiber of its own, so FiberRef changes it makes stay with it. It
 * keeps no state, so one value serves every stack. Dies with `IllegalArgumentException` when `after` is not
 * longer than zero.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const slowLookup = (id: number) => Effect.as(Effect.sleep("3 seconds"), `user ${id}`)
 *
 * const program = Effect.gen(function*() {
 *   const timeout = yield* Middleware.timeout({ after: "1 second" })
 *   return yield* timeout(slowLookup)(7).pipe(
 *     Effect.catchTag("Timeout", (error) => Effect.succeed(error.message)) // "timed out after 1s"
 *   )
 * }).pipe(Effect.scoped)
 * ```
 */
export const timeout = (options: TimeoutOptions): Effect.Effect<Middleware<Timeout>, never, Scope.Scope> => {
  const limit = Duration.decode(options.after)
  return Effect.as(
    Validation.validate("Middleware.timeout", [["after", limit, Duration.toMillis(limit) > 0, "longer than zero"]]),
    timeoutOf(limit)
  )
}

const timeoutOf = (limit: Duration.Duration): Middleware<Timeout> => {
  const timedOut = () => new Timeout({ after: limit })
  return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Timeout, R> => (request) => {
    // The call's Effect is made when the timed service is called (as `tap` and `filter` do), so a
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
