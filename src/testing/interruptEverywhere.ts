/**
 * interruptEverywhere — "whatever instant it is interrupted at, the system stays sound", checked at every
 * instant rather than at the few a test author thinks of.
 *
 * Interruption-safety bugs hide in the gap between two steps: a permit taken but not yet guarded, a waiter
 * handed a permit at the very moment it is interrupted, a counter incremented before a sleep and
 * decremented after it. Such a bug passes every test that interrupts at a round instant; it fails only when
 * the interruption lands exactly there. This is the technique that exposed the permit leak once found in
 * Effect's own `Semaphore.withPermits`: run the scenario, interrupting it at its 1st suspension point; run
 * it again, interrupting at its 2nd; and so on, until a run reaches its end without being interrupted.
 * After every run, interrupted or not, the scenario's `check` states the invariants (no permit out, every
 * job in exactly one outcome, the gauges back at zero).
 *
 * Suspension points are counted by a Supervisor installed around `run` only: each time `run`'s fiber, or a
 * fiber it forked, stops running without having ended (`onSuspend`: it awaits a Deferred, a sleep, a queue,
 * or yields) is one point, counted for as long as `run` has not ended. An async step that completes at once
 * counts too (a Semaphore or SynchronizedRef taken without waiting: TestClock's `sleep` has one before its
 * wait), and an interruption there lands at the fiber's next step. At the k-th point the supervisor sends
 * the interrupt to `run`'s fiber as any other fiber would, as a task on that fiber's scheduler, so it is
 * handled right after the fibers already scheduled have had their turn. (Handling it before them, from
 * inside the supervisor's callback, makes schedules no real interrupter can cause, and Effect's own
 * concurrent `Effect.all` deadlocks in one of them.) The count is the same run after run as long as the
 * scenario is deterministic, which it is on TestClock: every phase (building the system, `run`, `check`,
 * closing the run's Scope) is driven by `VirtualTime`, so scenarios that sleep make progress and no instant
 * depends on the wall clock.
 *
 * Each run builds a fresh system by running `scenario` in a fresh Scope, closed after the check. The
 * search is bounded by `maxSuspensionPoints`; a phase that cannot finish (a cleanup that deadlocks once
 * interrupted, say) fails with `Stuck` instead of hanging.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Supervisor from "effect/Supervisor"
import type * as Fiber from "effect/Fiber"
import type * as FiberId from "effect/FiberId"
import type * as TestServices from "effect/TestServices"
import { describe } from "../Errors.js"
import type { Livelock, Stalled } from "./VirtualTime.js"
import * as VirtualTime from "./VirtualTime.js"
import * as Validation from "../internal/Validation.js"

/** How one run ended, as the scenario's `check` receives it. */
export interface Outcome<A, E> {
  /**
   * How `run` ended. When `interruptedAt` is some point this is usually an interruption, but not always: the
   * interrupt is handled after the fibers already scheduled, and not inside an uninterruptible region, so
   * `run` may end another way first. The check must hold whatever it is.
   */
  readonly exit: Exit.Exit<A, E>
  /** The suspension point (from 1) `run` was interrupted at; none for the run left to reach its end. */
  readonly interruptedAt: Option.Option<number>
}

/** One fresh system: what to run, and the invariants that must hold after it, however it ended. */
export interface Scenario<A, E, R, E2, R2> {
  /**
   * The effect under test. It runs on virtual time in the run's Scope (so it may use `Scope`), watched for
   * suspension points, and is interrupted at one of them in every run but the last.
   */
  readonly run: Effect.Effect<A, E, R>
  /**
   * States the invariants after `run`, however it ended; it runs on virtual time in the same Scope, before
   * that Scope closes. A typed failure becomes `InvariantBroken`; a defect (a failed `expect`) stays a defect,
   * its message naming the point.
   */
  readonly check: (outcome: Outcome<A, E>) => Effect.Effect<void, E2, R2>
}

/**
 * Options of `interruptEverywhere`: the `VirtualTime` options that drive every phase of every run (`maxSteps`,
 * `settleRounds`), and the bound on the search.
 */
export interface Options extends VirtualTime.Options {
  /**
   * The most suspension points a run may have: the search fails with `TooManySuspensionPoints` once the run
   * interrupted at point `maxSuspensionPoints + 1` has been checked. An integer ≥ 0 (anything else is a
   * defect). Default 1,000.
   */
  readonly maxSuspensionPoints?: number
}

/** What a search that found no broken invariant did. */
export interface Report {
  /** Runs made, the last one uninterrupted: `suspensionPoints + 1`. */
  readonly runs: number
  /** Suspension points of the uninterrupted run, each of which some run was interrupted at. */
  readonly suspensionPoints: number
}

/** A run still had suspension points left after `maxSuspensionPoints`. */
export class TooManySuspensionPoints extends Data.TaggedError("TooManySuspensionPoints")<{
  /** The bound that was passed: the `maxSuspensionPoints` option, 1,000 by default. */
  readonly maxSuspensionPoints: number
}> {
  /** Reads `interruptEverywhere: a run has more than 1000 suspension points (maxSuspensionPoints)`. */
  override get message() {
    return `interruptEverywhere: a run has more than ${this.maxSuspensionPoints} suspension points (maxSuspensionPoints)`
  }
}

/** The scenario's `check` failed after a run: `error` is the check's failure. */
export class InvariantBroken<E> extends Data.TaggedError("InvariantBroken")<{
  /** The suspension point (from 1) the failing run was interrupted at; none for the run left to reach its end. */
  readonly interruptedAt: Option.Option<number>
  /** The typed error the check failed with. */
  readonly error: E
}> {
  /**
   * Reads `interruptEverywhere: invariant broken after the run interrupted at suspension point 3: …`, then the
   * error's own description.
   */
  override get message() {
    return `interruptEverywhere: invariant broken ${afterRun(this.interruptedAt)}: ${describe(this.error)}`
  }
}

/**
 * A phase of one run, as `Stuck` names it: `build` (running the scenario's builder), `run`, `check`, and
 * `close` (closing the run's Scope).
 */
export type Phase = "build" | "run" | "check" | "close"

/** A phase of a run never finished: it kept sleeping (`Livelock`) or waited for nothing time brings (`Stalled`). */
export class Stuck extends Data.TaggedError("Stuck")<{
  /** The phase that never finished. */
  readonly phase: Phase
  /** The suspension point (from 1) this run was interrupted at; none for the run left to reach its end. */
  readonly interruptedAt: Option.Option<number>
  /** Why the phase could not finish, as `VirtualTime.runExit` reported it. */
  readonly reason: Livelock | Stalled
}> {
  /**
   * Reads `interruptEverywhere: the close phase after the run interrupted at suspension point 2 never ended: `
   * followed by the reason's message.
   */
  override get message() {
    return `interruptEverywhere: the ${this.phase} phase ${afterRun(this.interruptedAt)} never ended: ${this.reason.message}`
  }
}

/**
 * A scenario from its `run` and its `check`, typing `check` from `run` without annotations:
 * `Effect.succeed(scenario(run, ({ exit }) => …))`. (Two arguments rather than one object, so that
 * TypeScript infers `run` completely before it types `check`.) See `interruptEverywhere` for an example.
 */
export const scenario = <A, E, R, E2, R2>(
  run: Effect.Effect<A, E, R>,
  check: (outcome: Outcome<A, E>) => Effect.Effect<void, E2, R2>
): Scenario<A, E, R, E2, R2> => ({ run, check })

/**
 * Runs the scenario once per suspension point of `run`, interrupting the k-th run at its k-th point, then
 * once more to the end, checking the invariants after each run. `build` is run afresh for every run, in that
 * run's Scope, and must build a fresh system each time. Every phase runs on virtual time, so it needs the
 * `TestServices` (`it.effect` provides them, or `TestContext.TestContext`).
 *
 * Succeeds with how many runs and points there were. Fails with `InvariantBroken` at the first run whose
 * `check` fails, with `Stuck` when a phase of a run cannot finish, with `TooManySuspensionPoints` past
 * `maxSuspensionPoints`, and with `build`'s own failure as it is. A check that dies makes the search die,
 * naming the point.
 *
 * @example
 * ```ts
 * import { Effect, TestContext } from "effect"
 * import { interruptEverywhere, scenario } from "keel/testing"
 *
 * // A fresh counter per run, taken by acquireUseRelease: it must be back at 0 however `run` ended.
 * const counter = Effect.sync(() => {
 *   let held = 0
 *   const run = Effect.acquireUseRelease(
 *     Effect.sync(() => held++),
 *     () => Effect.sleep("1 second"),
 *     () => Effect.sync(() => held--)
 *   )
 *   return scenario(run, () => (held === 0 ? Effect.void : Effect.fail(`${held} still held`)))
 * })
 *
 * // Succeeds with a Report; fails with InvariantBroken naming the point if any run left the counter held.
 * const program = interruptEverywhere(counter).pipe(Effect.provide(TestContext.TestContext))
 * ```
 */
export const interruptEverywhere = <A, E, R, E2, R2, E3, R3>(
  build: Effect.Effect<Scenario<A, E, R, E2, R2>, E3, R3>,
  options: Options = {}
): Effect.Effect<
  Report,
  InvariantBroken<E2> | E3 | Stuck | TooManySuspensionPoints,
  Exclude<R | R2 | R3, Scope.Scope> | TestServices.TestServices
> =>
  Effect.gen(function*() {
    const maxSuspensionPoints = options.maxSuspensionPoints ?? 1_000
    yield* Validation.validate("interruptEverywhere", [
      ["maxSuspensionPoints", maxSuspensionPoints, Validation.isIntegerFrom(maxSuspensionPoints, 0), Validation.integerFrom(0)]
    ])
    const interruptor = yield* Effect.fiberId
    for (let interruptAt = 1;; interruptAt++) {
      const supervisor = new InterruptAtSuspension(interruptAt, interruptor)
      yield* runOnce(build, supervisor, options)
      if (!supervisor.interrupted) return { runs: interruptAt, suspensionPoints: supervisor.suspensions }
      if (interruptAt > maxSuspensionPoints) return yield* new TooManySuspensionPoints({ maxSuspensionPoints })
    }
  })

// ---------------------------------------------------------------------------------------------------------

/** Counts the suspensions of `run`'s fibers while `run` has not ended, and interrupts `run` at the k-th. */
class InterruptAtSuspension extends Supervisor.AbstractSupervisor<number> {
  suspensions = 0
  interrupted = false
  private root: Fiber.RuntimeFiber<unknown, unknown> | undefined
  private counting = false
  readonly interruptAt: number
  readonly interruptor: FiberId.FiberId

  constructor(interruptAt: number, interruptor: FiberId.FiberId) {
    super()
    this.interruptAt = interruptAt
    this.interruptor = interruptor
  }

  readonly value = Effect.sync(() => this.suspensions)

  override onSuspend<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    if (!this.counting || fiber.unsafePoll() !== null) return
    this.suspensions++
    const root = this.root
    if (this.suspensions === this.interruptAt && root !== undefined) {
      this.interrupted = true
      root.currentScheduler.scheduleTask(() => root.unsafeInterruptAsFork(this.interruptor), 0, root)
    }
  }

  get interruptedAt(): Option.Option<number> {
    return this.interrupted ? Option.some(this.interruptAt) : Option.none()
  }

  /** `run` in the fiber that runs it, watched from its first step to its end. */
  watch<A, E, R>(run: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    const watched = Effect.withFiberRuntime<A, E, R>((fiber) => {
      this.root = fiber
      this.counting = true
      return Effect.ensuring(run, Effect.sync(() => (this.counting = false)))
    })
    return Effect.supervised(watched, this)
  }
}

const runOnce = <A, E, R, E2, R2, E3, R3>(
  build: Effect.Effect<Scenario<A, E, R, E2, R2>, E3, R3>,
  supervisor: InterruptAtSuspension,
  options: VirtualTime.Options
) =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) =>
      Effect.gen(function*() {
        const drive = <X, EX, RX>(phase: Phase, effect: Effect.Effect<X, EX, RX>) =>
          VirtualTime.runExit(Scope.extend(effect, scope), options).pipe(
            Effect.mapError((reason) => new Stuck({ phase, interruptedAt: supervisor.interruptedAt, reason }))
          )
        const { check, run } = yield* Effect.flatten(drive("build", build))
        const exit = yield* drive("run", supervisor.watch(run))
        const interruptedAt = supervisor.interruptedAt
        const checked = yield* drive("check", check({ exit, interruptedAt }))
        yield* Effect.catchAllCause(checked, (cause) => brokenInvariant(cause, interruptedAt))
        yield* Effect.flatten(drive("close", Scope.close(scope, Exit.void)))
      }),
    // Closed already unless a phase failed; then its finalizers are driven too, and a stuck one is left.
    (scope, exit) => Effect.ignore(VirtualTime.runExit(Scope.close(scope, exit), options))
  )

// A typed failure of the check becomes `InvariantBroken`; a defect (a failed `expect`) stays a defect, with
// the point in its message; an interruption stays as it is.
const brokenInvariant = <E2>(cause: Cause.Cause<E2>, interruptedAt: Option.Option<number>) => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return Effect.fail(new InvariantBroken({ interruptedAt, error: failure.value }))
  const defect = Chunk.head(Cause.defects(cause))
  if (Option.isSome(defect)) {
    return Effect.die(
      new Error(`interruptEverywhere: the check died ${afterRun(interruptedAt)}: ${describe(defect.value)}`, {
        cause: defect.value
      })
    )
  }
  return Effect.failCause(Cause.stripFailures(cause))
}

const afterRun = (interruptedAt: Option.Option<number>) =>
  Option.match(interruptedAt, {
    onNone: () => "after the run left to reach its end",
    onSome: (point) => `after the run interrupted at suspension point ${point}`
  })
