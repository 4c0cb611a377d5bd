/**
 * deadline — a remaining-time budget carried in fiber context, honoured by every timeout and retry below.
 *
 * Tower, cockatiel and Polly time out per hop: a 2 s timeout over a retry of 1 s timeouts can still spend
 * 2 s after the caller has given up. Here the caller's deadline is an absolute instant (Clock time) in a
 * FiberRef (`internal/deadline`); `deadline({ after })` narrows it for the call below (never widens it), and
 * `timeout`, `retry` and `hedge` read it so that nested calls never outlive their caller. Past the deadline
 * the call is interrupted and fails with `Timeout { after }`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { Timeout } from "../Errors.js"
import { failAfter } from "../internal/callTimeout.js"
import { currentDeadline, remainingFor } from "../internal/deadline.js"
import * as Validation from "../internal/Validation.js"
import type { Middleware, Service } from "./Middleware.js"

/** Time left before the current call's deadline (zero once it has passed); none when there is no deadline. */
export const remaining: Effect.Effect<Option.Option<Duration.Duration>> = Effect.withFiberRuntime((fiber) =>
  Effect.succeed(remainingFor(fiber))
)

/**
 * Runs `effect` with the deadline narrowed to `budget` from now; a caller's sooner deadline stays. It only
 * sets the deadline: nothing is interrupted by `within` itself, only by the `timeout`, `retry` and `hedge`
 * middleware that read it below. Use the `deadline` middleware to have the call fail when it runs out.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const slow = (id: number) => Effect.as(Effect.sleep("5 seconds"), id)
 *
 * const program = Effect.gen(function*() {
 *   const timed = (yield* Middleware.timeout({ after: "10 seconds" }))(slow)
 *   // Fails with Timeout after 1 second: the caller's deadline is sooner than the timeout.
 *   return yield* Middleware.within("1 second")(timed(1))
 * }).pipe(Effect.scoped)
 * ```
 */
export const within = (budget: Duration.DurationInput) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const own = now + Duration.toMillis(Duration.decode(budget))
    const inherited = yield* FiberRef.get(currentDeadline)
    const narrowed = Option.isSome(inherited) ? Math.min(inherited.value, own) : own
    return yield* Effect.locally(effect, currentDeadline, Option.some(narrowed))
  })

/** What `deadline` takes. */
export interface DeadlineOptions {
  /** The time the call below gets in all, retries included; longer than zero. */
  readonly after: Duration.DurationInput
}

/**
 * The deadline middleware: the call below gets at most `after` (or the caller's remaining time, if that
 * is less), every `timeout`, `retry` and `hedge` below honours it, and past it the call is interrupted (its
 * finalizers run first) and fails with `Timeout { after }`. Put it at the top of a stack to bound the whole
 * call, retries included. Dies with `IllegalArgumentException` when `after` is not longer than zero.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const fetchOrder = (id: string) => Effect.succeed({ id, total: 42 })
 *
 * const program = Effect.gen(function*() {
 *   // At most 2 seconds in all; each attempt at most 500 ms, and never past the 2 seconds.
 *   const guarded = Middleware.stack(
 *     yield* Middleware.deadline({ after: "2 seconds" }),
 *     yield* Middleware.retry({ backoff: { base: "100 millis", max: "1 second" } }),
 *     yield* Middleware.timeout({ after: "500 millis" })
 *   )
 *   return yield* guarded(fetchOrder)("A-17")
 * }).pipe(Effect.scoped)
 * ```
 */
export const deadline = (options: DeadlineOptions): Effect.Effect<Middleware<Timeout>, never, Scope.Scope> => {
  const after = Duration.decode(options.after)
  return Effect.as(
    Validation.validate("Middleware.deadline", [["after", after, Duration.toMillis(after) > 0, "longer than zero"]]),
    <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Timeout, R> => (request) =>
      within(after)(
        Effect.flatMap(remaining, (left) =>
          failAfter(Option.getOrElse(left, () => after), () => new Timeout({ after }))(service(request)))
      )
  )
}
