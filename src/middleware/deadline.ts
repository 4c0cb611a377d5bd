/**
 * deadline — a remaining-time budget carried in fiber context, honoured by every timeout and retry below.
 *
 * Tower, cockatiel and Polly time out per hop: a 2 s timeout over a retry of 1 s timeouts can still spend
 * 2 s after the caller has given up. Here the caller's deadline is an absolute instant (Clock time) in a
 * FiberRef; `deadline(budget)` narrows it for the call below (never widens it), and `timeout`, `retry` and
 * `hedge` read `remaining` so that nested calls never outlive their caller. Past the deadline the call is
 * interrupted and fails with `Timeout { after: budget }`.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as Fiber from "effect/Fiber"
import { Timeout } from "../Errors.js"
import type { Middleware, Service } from "./Middleware.js"
import { failAfter } from "./timeout.js"

/**
 * The instant (Clock time, in ms) by which the current call must end; none when no caller set one. Set by
 * `within` (and so by `deadline`); read through `remaining` by `timeout`, `retry`, `hedge` and a waiting
 * `rateLimit`. Machinery for those middleware: set it with `within` rather than directly, which could
 * widen a caller's deadline.
 */
export const currentDeadline: FiberRef.FiberRef<Option.Option<number>> = FiberRef.unsafeMake(Option.none())

/**
 * Time left before the deadline of the call `fiber` is running (zero once it has passed); none when there
 * is no deadline. The synchronous form of `remaining`, for middleware that already hold their fiber.
 */
export const remainingFor = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Option.Option<Duration.Duration> => {
  const deadline = fiber.getFiberRef(currentDeadline)
  if (Option.isNone(deadline)) return Option.none()
  const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
  return Option.some(Duration.millis(Math.max(0, deadline.value - now)))
}

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
 * const timed = Middleware.timeout("10 seconds")(slow)
 *
 * // Fails with Timeout after 1 second: the caller's deadline is sooner than the timeout.
 * const program = Middleware.within("1 second")(timed(1))
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

/**
 * The deadline middleware: the call below gets at most `budget` (or the caller's remaining time, if that
 * is less), every `timeout`, `retry` and `hedge` below honours it, and past it the call is interrupted (its
 * finalizers run first) and fails with `Timeout { after: budget }`. Put it at the top of a stack to bound
 * the whole call, retries included.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const fetchOrder = (id: string) => Effect.succeed({ id, total: 42 })
 *
 * const program = Effect.gen(function*() {
 *   const retry = yield* Middleware.retry({ backoff: { base: "100 millis", max: "1 second" } })
 *   // At most 2 seconds in all; each attempt at most 500 ms, and never past the 2 seconds.
 *   const guarded = Middleware.stack(Middleware.deadline("2 seconds"), retry, Middleware.timeout("500 millis"))
 *   return yield* guarded(fetchOrder)("A-17")
 * }).pipe(Effect.scoped)
 * ```
 */
export const deadline = (budget: Duration.DurationInput): Middleware<Timeout> => {
  const after = Duration.decode(budget)
  return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Timeout, R> => (request) =>
    within(after)(
      Effect.flatMap(remaining, (left) =>
        failAfter(Option.getOrElse(left, () => after), () => new Timeout({ after }))(service(request)))
    )
}
