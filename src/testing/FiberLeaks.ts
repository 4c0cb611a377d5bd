/**
 * FiberLeaks — "nothing outlives its scope", checked.
 *
 * Keel's components promise that closing their Scope stops everything they started: workers, renewers,
 * timers, the fibers a finalizer forks to hand work back. A fiber that survives is a leak — it holds
 * memory, permits or a connection, and in a server it keeps running after shutdown said it was done.
 * `check(effect)` runs `effect` in a fresh Scope under a Supervisor that sees every fiber forked inside it,
 * however it was forked (`fork`, `forkDaemon`, `forkIn`, from a finalizer while the scope closes) and
 * whatever those fibers fork in turn. Once the scope has closed it yields a few times, so fibers that are
 * just finishing (an interrupted fiber running its finalizers, a cleanup forked by a finalizer) can end,
 * then fails with `FiberLeak` listing each fiber still alive: its id, how long it has lived (by `Clock`,
 * so TestClock drives it) and a name — its `fiber.name` log annotation, else its current span's name,
 * else its other log annotations, else its id (`Leftovers.nameOf`, as in the shutdown report). The leaked
 * fibers are then interrupted (without waiting for them), so one failing check does not leave work running
 * into the next test.
 *
 * When `effect` itself fails, that failure is the result: it is what the caller needs to see first.
 *
 * Under TestClock, the first `Effect.sleep` of a test before any `TestClock.adjust` forks TestClock's own
 * "time is not advancing" warning fiber as a child of the sleeping fiber. When that fiber is a leak, the
 * warning fiber is listed with it (unnamed); adjusting the clock first avoids the extra entry.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Supervisor from "effect/Supervisor"
import type * as Scope from "effect/Scope"
import * as Leftovers from "../Leftovers.js"
import * as Validation from "../internal/Validation.js"

/** A fiber still alive after the scope it was forked in had closed. */
export interface LeakedFiber {
  /** The fiber's id number (`#id` in Effect's logs). */
  readonly id: number
  /**
   * Its `fiber.name` log annotation, else its current span's name, else its other log annotations
   * (`pool=jobs worker=3`), else `#id`.
   */
  readonly name: string
  /** How long it had lived when the check found it, by `Clock` (so on TestClock, virtual time). */
  readonly age: Duration.Duration
}

/** How many fibers the message names; `fibers` holds them all. */
const shownInMessage = 10

const describeFiber = (fiber: LeakedFiber) => {
  const idLabel = `#${fiber.id}`
  const age = Duration.toMillis(fiber.age) === 0 ? "0ms" : Duration.format(fiber.age)
  return fiber.name === idLabel ? `${idLabel} (alive ${age})` : `${fiber.name} (${idLabel}, alive ${age})`
}

/** Fibers forked inside a checked effect were still alive after its scope closed. */
export class FiberLeak extends Data.TaggedError("FiberLeak")<{
  /** Every fiber found alive, in the order they started; the message names the first 10. */
  readonly fibers: ReadonlyArray<LeakedFiber>
}> {
  /**
   * Reads `2 fibers still alive after the scope closed: renewer (#12, alive 5s), #14 (alive 0ms)`, with
   * `, … and n more` past ten fibers.
   */
  override get message() {
    const shown = this.fibers.slice(0, shownInMessage).map(describeFiber).join(", ")
    const more = this.fibers.length > shownInMessage ? `, … and ${this.fibers.length - shownInMessage} more` : ""
    const count = this.fibers.length === 1 ? "1 fiber" : `${this.fibers.length} fibers`
    return `${count} still alive after the scope closed: ${shown}${more}`
  }
}

/** Options of `check`. */
export interface CheckOptions {
  /**
   * `Effect.yieldNow()`s after the scope closed, for finishing fibers to end. An integer ≥ 0 (anything else
   * is a defect). Default 10.
   */
  readonly graceYields?: number
}

/** The annotation that names a fiber in a leak report (`Effect.annotateLogs("fiber.name", "renewer")`). */
export const nameAnnotation = Leftovers.nameAnnotation

/** Every fiber started under it and not yet ended, with the instant it started. */
class LiveFibers extends Supervisor.AbstractSupervisor<ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>> {
  readonly startedAt = new Map<Fiber.RuntimeFiber<unknown, unknown>, number>()

  private readonly clock: Clock.Clock

  constructor(clock: Clock.Clock) {
    super()
    this.clock = clock
  }

  get value() {
    return Effect.sync(() => [...this.startedAt.keys()])
  }

  override onStart<A, E, R>(
    _context: Context.Context<R>,
    _effect: Effect.Effect<A, E, R>,
    _parent: Option.Option<Fiber.RuntimeFiber<any, any>>,
    fiber: Fiber.RuntimeFiber<A, E>
  ) {
    this.startedAt.set(fiber, this.clock.unsafeCurrentTimeMillis())
  }

  override onEnd<A, E>(_exit: Exit.Exit<A, E>, fiber: Fiber.RuntimeFiber<A, E>) {
    this.startedAt.delete(fiber)
  }
}

/**
 * Runs `effect` in a fresh Scope, closes it, and fails with `FiberLeak` if any fiber forked inside is
 * still alive `graceYields` yields later; those fibers are interrupted, without waiting for them. When
 * `effect` fails or dies, that is the result instead (leaked fibers are still interrupted). Otherwise
 * succeeds with `effect`'s value.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FiberLeaks } from "keel/testing"
 *
 * const poller = Effect.never.pipe(Effect.annotateLogs(FiberLeaks.nameAnnotation, "poller"))
 *
 * // Fails with FiberLeak: "1 fiber still alive after the scope closed: poller (#52, alive 1ms)".
 * const leaky = FiberLeaks.check(Effect.forkDaemon(poller))
 * // Succeeds: forkScoped ties the fiber to the Scope that `check` closes.
 * const tidy = FiberLeaks.check(Effect.forkScoped(poller))
 * ```
 */
export const check = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options: CheckOptions = {}
): Effect.Effect<A, E | FiberLeak, Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const graceYields = options.graceYields ?? 10
    yield* Validation.validate("FiberLeaks.check", [
      ["graceYields", graceYields, Validation.isIntegerFrom(graceYields, 0), Validation.integerFrom(0)]
    ])
    const clock = yield* Effect.clock
    const live = new LiveFibers(clock)
    const exit = yield* Effect.exit(Effect.supervised(Effect.scoped(effect), live))
    for (let step = 0; step < graceYields; step++) yield* Effect.yieldNow()

    const now = clock.unsafeCurrentTimeMillis()
    const leaked = [...live.startedAt].map(([fiber, startedAt]) => ({ fiber, startedAt }))
    const fibers: ReadonlyArray<LeakedFiber> = leaked.map(({ fiber, startedAt }) => ({
      id: fiber.id().id,
      name: Leftovers.nameOf(fiber),
      age: Duration.millis(now - startedAt)
    }))
    yield* Effect.forEach(leaked, ({ fiber }) => Fiber.interruptFork(fiber), { discard: true })

    if (Exit.isFailure(exit)) return yield* Effect.failCause(exit.cause)
    if (fibers.length > 0) return yield* Effect.fail(new FiberLeak({ fibers }))
    return exit.value
  })
