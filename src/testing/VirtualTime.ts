/**
 * VirtualTime — runs an Effect on the TestClock to its end, moving time only when nothing else can move.
 *
 * A test on TestClock has to say how far to move the clock, so it has to know when the code under test
 * sleeps: a retry policy's delays, a timeout, a drain deadline. That couples the test to the schedule, and a
 * wrong guess either leaves the program waiting or skips past the instant that mattered. Here the runner
 * plays the part of the clock: it forks the program, lets it (and every fiber it forks) run until it goes
 * quiet, then moves the TestClock to the earliest pending sleep and wakes the sleepers due then, one at a
 * time with the same settling in between, as `TestClock.adjust` does. It repeats until the program is done
 * and hands back its `Exit`.
 *
 * Settling is bounded. After each wake-up the runner yields (`Effect.yieldNow()`) `settleRounds` times, which
 * gives every fiber that is ready a turn per round, the test's own fibers included; a yield comes after every
 * task already scheduled. A Supervisor around the program counts every time one of the program's fibers
 * resumes, and while they still do the settle goes on, until two rounds in a row pass in which none of them
 * ran (quiet) or `busyFactor × settleRounds` rounds have passed (busy: the clock does not move, the next step
 * settles again). So a long chain of hand-overs inside the program ends before time moves on; a chain among
 * fibers started outside it (a pool the test built beforehand) gets the fixed `settleRounds`.
 *
 * Two ways a test on virtual time can hang become typed failures instead. A program that never ends —
 * sleeping in a `forever` loop, retrying without a limit, or busy without sleeping — fails with `Livelock`
 * after `maxSteps` steps (a step moves the clock, or is a settle the program spent busy). A program that is
 * quiet, not done, and has no sleep pending waits for something time cannot bring (a Deferred no one
 * completes, a queue no one fills) and fails with `Stalled`, after one turn of the real event loop has shown
 * nothing else was still coming (Effect's scheduler moves a fiber that keeps rescheduling itself to a timer,
 * which yields, being microtasks, can pass by). Either way, and when the runner itself is
 * interrupted, the program is interrupted and its finalizers are driven on virtual time as well; a program
 * whose finalizers cannot finish either is left behind, interrupted, rather than waited for.
 *
 * `TestClock.adjust` waits for real timers (several `setTimeout(0)`) before each wake-up, close to 10 ms a
 * step on a small machine: 10,000 steps would take minutes. So when the TestClock is effect 3.x's own
 * implementation, whose state is a `Ref` of pending sleeps, the runner wakes the sleepers itself exactly as
 * `TestClock.adjust` would, minus the real-timer wait, which the settling above replaces. With any other
 * TestClock it falls back to `TestClock.setTime`. It needs the `TestServices` that `it.effect` provides.
 */
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Order from "effect/Order"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import * as TestServices from "effect/TestServices"
import type * as Exit from "effect/Exit"
import * as Validation from "../internal/Validation.js"

/** Options of `run` and `runExit`: how long a run may go on, and how long it settles between steps. */
export interface Options {
  /**
   * Steps (clock advances, or settles the program spent busy) before it counts as a livelock. An integer ≥ 0.
   * Default 10,000.
   */
  readonly maxSteps?: number
  /**
   * `Effect.yieldNow()` rounds given to the fibers to make progress after each wake-up, before the clock may
   * move again; more while the program's own fibers keep running. An integer ≥ 1. Default 20.
   */
  readonly settleRounds?: number
}

/** The program was still not done after `steps` steps: clock advances, or settles it spent busy. */
export class Livelock extends Data.TaggedError("Livelock")<{
  /** Steps taken when the run gave up: the `maxSteps` option, 10,000 by default. */
  readonly steps: number
  /** Virtual time that had passed since the run began. */
  readonly virtualMillis: number
}> {
  /** Reads `livelock: not done after 10000 steps (2h 46m 40s of virtual time)`. */
  override get message() {
    return `livelock: not done after ${this.steps} steps (${formatMillis(this.virtualMillis)} of virtual time)`
  }
}

/** The program was quiet, not done, and no sleep was pending: it waits for what no clock advance can bring. */
export class Stalled extends Data.TaggedError("Stalled")<{
  /** Virtual time that had passed since the run began. */
  readonly virtualMillis: number
}> {
  /** Reads `stalled after 5s of virtual time: waiting, and no sleep is pending`. */
  override get message() {
    return `stalled after ${formatMillis(this.virtualMillis)} of virtual time: waiting, and no sleep is pending`
  }
}

/**
 * Runs `effect` on virtual time to its end and returns how it ended. Fails only when the run itself could
 * not finish: `Livelock` or `Stalled`; the program is then interrupted, as it is when the runner is. Options
 * out of range are a defect. Needs the `TestServices` (`it.effect`, or `TestContext.TestContext`).
 */
export const runExit = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options: Options = {}
): Effect.Effect<Exit.Exit<A, E>, Livelock | Stalled, R | TestServices.TestServices> =>
  Effect.gen(function*() {
    const limits = yield* validate(options)
    const clock = yield* TestClock.testClockWith(Effect.succeed)
    const advance = advancerOf(clock)
    yield* advance.retireWarning
    const startedAt = clock.unsafeCurrentTimeMillis()
    const activity = new Activity()
    const drive = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
      driveToEnd(fiber, { clock, advance, activity, startedAt, limits })
    // Interrupts the program and drives its finalizers; if they cannot finish either, it is left interrupted.
    // It runs as a daemon for that reason: a child fiber stuck for good would hold its parent's end.
    const stop = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
      Effect.fiberIdWith((runner) => Effect.zipRight(Fiber.interruptAsFork(fiber, runner), Effect.ignore(drive(fiber))))
    return yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Effect.forkDaemon(Effect.supervised(restore(effect), activity)), (fiber) =>
        restore(drive(fiber)).pipe(
          Effect.onInterrupt(() => stop(fiber)),
          Effect.tapError(() => stop(fiber))
        ))
    )
  })

/**
 * Runs `effect` on virtual time to its end: its value, its error, or `Livelock` / `Stalled` (see `runExit`).
 *
 * @example
 * ```ts
 * import { Effect, Schedule, TestContext } from "effect"
 * import { VirtualTime } from "keel/testing"
 *
 * // Ends at once in real time, an hour into virtual time: no TestClock.adjust needed.
 * const hour = VirtualTime.run(Effect.sleep("1 hour").pipe(Effect.as("done")))
 *
 * // Fails with Livelock after 100 steps instead of hanging the test.
 * const forever = VirtualTime.run(Effect.repeat(Effect.void, Schedule.spaced("1 second")), { maxSteps: 100 })
 *
 * const program = Effect.all([hour, Effect.either(forever)]).pipe(Effect.provide(TestContext.TestContext))
 * ```
 */
export const run = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options: Options = {}
): Effect.Effect<A, E | Livelock | Stalled, R | TestServices.TestServices> =>
  Effect.flatMap(runExit(effect, options), (exit) => exit)

// ---------------------------------------------------------------------------------------------------------

interface Limits {
  readonly maxSteps: number
  readonly settleRounds: number
}

interface Advancer {
  /** Moves the clock to `instant`, the earliest pending sleep, waking every sleeper due then. */
  readonly to: (instant: number, settle: Effect.Effect<Settled>) => Effect.Effect<void>
  /**
   * Cancels TestClock's "a test is using time but not advancing the clock" warning, which would otherwise
   * be forked, at the first sleep, as a child of the sleeping fiber: a stray fiber inside the program.
   */
  readonly retireWarning: Effect.Effect<void>
}

type Sleep = readonly [number, Deferred.Deferred<void>]

/** What effect 3.x's `TestClockImpl` has beyond the public interface; checked at run time, never assumed. */
interface TestClockInternals {
  readonly clockState: Ref.Ref<TestClock.Data>
  readonly warningDone: () => Effect.Effect<void>
}

const hasInternals = (clock: TestClock.TestClock): clock is TestClock.TestClock & TestClockInternals =>
  Predicate.hasProperty(clock, "clockState") && Predicate.hasProperty(clock.clockState, Ref.RefTypeId) &&
  Predicate.hasProperty(clock, "warningDone") && Predicate.isFunction(clock.warningDone)

// TestClock's order: by instant, and among sleeps due at the same instant the one registered last first.
const byInstant = Order.mapInput(Order.number, (sleep: Sleep) => sleep[0])

const advancerOf = (clock: TestClock.TestClock): Advancer => {
  if (!hasInternals(clock)) {
    return { to: (instant) => clock.setTime(instant), retireWarning: clock.adjust(Duration.zero) }
  }
  const takeDue = (instant: number) =>
    Ref.modify(clock.clockState, (data): readonly [Option.Option<Deferred.Deferred<void>>, TestClock.Data] => {
      const sorted = Chunk.sort(data.sleeps, byInstant)
      if (Chunk.isNonEmpty(sorted)) {
        const [dueAt, sleeper] = Chunk.headNonEmpty(sorted)
        if (dueAt <= instant) return [Option.some(sleeper), TestClock.makeData(dueAt, Chunk.tailNonEmpty(sorted))]
      }
      return [Option.none(), data]
    })
  const to = (instant: number, settle: Effect.Effect<Settled>): Effect.Effect<void> =>
    Effect.flatMap(takeDue(instant), (due) =>
      Option.match(due, {
        onNone: () => Effect.void,
        onSome: (sleeper) =>
          Deferred.succeed(sleeper, undefined).pipe(
            Effect.zipRight(settle),
            Effect.zipRight(Effect.suspend(() => to(instant, settle)))
          )
      }))
  return { to, retireWarning: clock.warningDone() }
}

/** Counts the resumptions of the program's fibers: the runner's measure of whether anything still runs. */
class Activity extends Supervisor.AbstractSupervisor<number> {
  resumptions = 0
  readonly value = Effect.sync(() => this.resumptions)

  override onResume<A, E>(_fiber: Fiber.RuntimeFiber<A, E>): void {
    this.resumptions++
  }
}

interface Driving {
  readonly clock: TestClock.TestClock
  readonly advance: Advancer
  readonly activity: Activity
  readonly startedAt: number
  readonly limits: Limits
}

/** Rounds in a row without any fiber of the program running, after which it is taken to be waiting. */
const quietRounds = 2

/** A settle that has lasted `busyFactor × settleRounds` rounds with the program still running ends as busy. */
const busyFactor = 5

type Settled = "done" | "quiet" | "busy"

const driveToEnd = <A, E>(
  fiber: Fiber.RuntimeFiber<A, E>,
  { activity, advance, clock, limits, startedAt }: Driving
): Effect.Effect<Exit.Exit<A, E>, Livelock | Stalled> =>
  Effect.gen(function*() {
    const settle = settleProgram(fiber, activity, limits.settleRounds)
    for (let steps = 0;; steps++) {
      const settled = yield* settle
      const exit = fiber.unsafePoll()
      if (exit !== null) return exit
      const pending = yield* clock.sleeps
      const virtualMillis = clock.unsafeCurrentTimeMillis() - startedAt
      const waiting = settled === "quiet"
      if (waiting && Chunk.isEmpty(pending)) {
        const resumptions = activity.resumptions
        yield* timerTurn
        if (activity.resumptions === resumptions && fiber.unsafePoll() === null) {
          return yield* new Stalled({ virtualMillis })
        }
      }
      if (steps >= limits.maxSteps) return yield* new Livelock({ steps, virtualMillis })
      // A busy program gets another settle before time moves on.
      if (waiting && Chunk.isNonEmpty(pending)) yield* advance.to(earliest(pending), settle)
    }
  })

/** One turn of the real event loop, on the live clock: `Effect.sleep(0)` there is a `setTimeout(0)`. */
const timerTurn = TestServices.provideLive(Effect.sleep(Duration.zero))

/**
 * Yields `minRounds` times, then on until the program is done, quiet for `quietRounds` rounds, or still
 * running after `busyFactor × minRounds` rounds.
 */
const settleProgram = <A, E>(
  fiber: Fiber.RuntimeFiber<A, E>,
  activity: Activity,
  minRounds: number
): Effect.Effect<Settled> =>
  Effect.gen(function*() {
    const maxRounds = minRounds * busyFactor
    let quiet = 0
    for (let round = 0;; round++) {
      if (fiber.unsafePoll() !== null) return "done"
      if (round >= minRounds && quiet >= quietRounds) return "quiet"
      if (round >= maxRounds) return "busy"
      const before = activity.resumptions
      yield* Effect.yieldNow()
      quiet = activity.resumptions === before ? quiet + 1 : 0
    }
  })

const earliest = (instants: Chunk.Chunk<number>) => {
  let first = Infinity
  for (const instant of instants) first = Math.min(first, instant)
  return first
}

const validate = (options: Options): Effect.Effect<Limits> => {
  const maxSteps = options.maxSteps ?? 10_000
  const settleRounds = options.settleRounds ?? 20
  return Effect.as(
    Validation.validate("VirtualTime.run", [
      ["maxSteps", maxSteps, Validation.isIntegerFrom(maxSteps, 0), Validation.integerFrom(0)],
      ["settleRounds", settleRounds, Validation.isIntegerFrom(settleRounds, 1), Validation.integerFrom(1)]
    ]),
    { maxSteps, settleRounds }
  )
}

const formatMillis = (millis: number) => Duration.format(Duration.millis(millis))
