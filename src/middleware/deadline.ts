/**
 * deadline — a remaining-time budget carried in fiber context, honoured by every timeout and retry below.
 *
 * Tower, cockatiel and Polly time out per hop: a 2 s timeout over a retry of 1 s timeouts can still spend
 * 2 s after the caller has given up. Here the caller's deadline is an absolute instant (Clock time) in a
 * FiberRef; `deadline(budget)` narrows it for the call below (never widens it), and `timeout`, `retry` and
 * `hedge` read `remaining` so that nested calls never outlive their caller. Past the deadline the call is
 * interrupted and fails with `Timeout { after: budget }`.
 */
import { Clock, Context, Duration, Effect, FiberRef, Option } from "effect"
import type { Fiber } from "effect"
import { Timeout } from "../Errors.js"
import type { Middleware, Service } from "./Middleware.js"
import { failAfter } from "./timeout.js"

/** The instant (Clock milliseconds) by which the current call must end; none when no caller set one. */
export const currentDeadline: FiberRef.FiberRef<Option.Option<number>> = FiberRef.unsafeMake(Option.none())

/** Time left before the deadline of the call `fiber` is running; none when there is no deadline. */
export const remainingFor = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Option.Option<Duration.Duration> => {
  const deadline = fiber.getFiberRef(currentDeadline)
  if (Option.isNone(deadline)) return Option.none()
  const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
  return Option.some(Duration.millis(Math.max(0, deadline.value - now)))
}

/** Time left before the current deadline; none when there is no deadline. */
export const remaining: Effect.Effect<Option.Option<Duration.Duration>> = Effect.withFiberRuntime((fiber) =>
  Effect.succeed(remainingFor(fiber))
)

/** Runs `effect` with the deadline narrowed to `budget` from now (a caller's sooner deadline stays). */
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
 * is less), every timeout and retry below honours it, and past it the call fails with `Timeout`.
 */
export const deadline = (budget: Duration.DurationInput): Middleware<Timeout> => {
  const after = Duration.decode(budget)
  return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Timeout, R> => (request) =>
    within(after)(
      Effect.flatMap(remaining, (left) =>
        failAfter(Option.getOrElse(left, () => after), () => new Timeout({ after }))(service(request)))
    )
}
