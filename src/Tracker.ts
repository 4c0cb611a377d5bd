/**
 * Tracker — TaskTracker semantics (close + wait) for work that runs in its callers' own fibers.
 *
 * Draining needs to know what is in flight. A request handler or a producer does not hand its work to a
 * pool; it runs it where it is. `track` registers that work for its duration, `close` refuses new work
 * with a typed `ShuttingDown`, `wait` completes once closed and empty, and `settle(deadline)` waits but,
 * when the deadline comes first, interrupts what is left and names it. This is Tokio's
 * `TaskTracker::close/wait` plus the deadline its users write by hand around it.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { ShuttingDown } from "./Errors.js"
import * as Waiters from "./internal/Waiters.js"

/**
 * What waiting with a deadline ended with: `Tracker`'s `settle`, and `waitFor` of a task group, return it.
 */
export interface Settlement {
  /** Work that ended on its own (succeeded or failed) while waiting, rather than being interrupted. */
  readonly finished: number
  /** Labels of the work the deadline interrupted. */
  readonly interrupted: ReadonlyArray<string>
}

/**
 * Work in flight in its callers' own fibers, registered for its duration so that a drain can wait for it and
 * cut it at a deadline. Made by `make`; the Lifecycle's `track` runs on one.
 */
export interface Tracker {
  /**
   * Runs `effect` in the caller's fiber as tracked work, under `label`, until it ends however it ends; or
   * fails with `ShuttingDown` at once, without running it, once the tracker is closed. `effect` keeps the
   * caller's interruptibility.
   *
   * @typeParam A - What `effect` succeeds with.
   * @typeParam E - How `effect` fails.
   * @typeParam R - What `effect` needs.
   */
  readonly track: <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | ShuttingDown, R>
  /** Refuses new work from now on; idempotent (the first reason is kept). */
  readonly close: (reason: string) => Effect.Effect<void>
  /** Whether `close` has been called. */
  readonly isClosed: Effect.Effect<boolean>
  /** Labels of the work in flight now, in the order it started. */
  readonly inFlight: Effect.Effect<ReadonlyArray<string>>
  /** Completes once the tracker is closed and nothing is in flight. */
  readonly wait: Effect.Effect<void>
  /**
   * Waits like `wait`, but when `deadline` completes first, interrupts what is left and lists it; waits at
   * most `grace` more for the interrupted work to end (work in an uninterruptible region may not). `grace`
   * defaults to no limit. It does not close the tracker: call `close` first, or it waits for `deadline`.
   */
  readonly settle: (deadline: Effect.Effect<unknown>, grace?: Duration.DurationInput) => Effect.Effect<Settlement>
}

interface Entry {
  readonly label: string
  readonly fiber: Fiber.RuntimeFiber<unknown, unknown>
}

/**
 * Makes an open tracker with nothing in flight. It needs no Scope and starts no fiber: each `make` is a new
 * tracker.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Tracker } from "keel"
 *
 * const program = Effect.gen(function*() {
 *   const tracker = yield* Tracker.make
 *   const handle = (id: string) => tracker.track(`request ${id}`, Effect.log(`handling ${id}`))
 *   yield* handle("1")
 *   // Shutting down: refuse new work, wait up to 10 seconds, then interrupt what is left.
 *   yield* tracker.close("draining")
 *   const settlement = yield* tracker.settle(Effect.sleep("10 seconds"))
 *   yield* Effect.log(`finished ${settlement.finished}, cut: ${settlement.interrupted.join(", ")}`)
 * })
 * ```
 */
export const make: Effect.Effect<Tracker> = Effect.sync(() => {
  let closedReason: string | undefined
  let nextId = 0
  const running = new Map<number, Entry>()
  const waiters = Waiters.make()

  const track = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.withFiberRuntime<A, E | ShuttingDown, R>((fiber) => {
        if (closedReason !== undefined) return Effect.fail(new ShuttingDown({ reason: closedReason }))
        const id = nextId++
        running.set(id, { label, fiber })
        return restore(effect).pipe(
          Effect.ensuring(Effect.sync(() => {
            running.delete(id)
            waiters.wake()
          }))
        )
      })
    )

  const wait = waiters.until(() => closedReason !== undefined && running.size === 0)

  const settle = (deadline: Effect.Effect<unknown>, grace: Duration.DurationInput = Duration.infinity): Effect.Effect<Settlement> =>
    Effect.suspend(() => {
      const pendingAtStart = running.size
      let interrupted: ReadonlyArray<string> = []
      const cutAtDeadline = Effect.flatMap(deadline, () =>
        Effect.suspend(() => {
          const left = [...running.values()]
          interrupted = left.map((entry) => entry.label)
          return Effect.forEach(left, (entry) => Fiber.interruptFork(entry.fiber), { discard: true }).pipe(
            Effect.zipRight(Effect.raceFirst(wait, Effect.sleep(grace)))
          )
        }))
      return Effect.raceFirst(wait, cutAtDeadline).pipe(
        Effect.map(() => ({ finished: pendingAtStart - interrupted.length, interrupted }))
      )
    })

  return {
    track,
    close: (reason) =>
      Effect.sync(() => {
        closedReason ??= reason
        waiters.wake()
      }),
    isClosed: Effect.sync(() => closedReason !== undefined),
    inFlight: Effect.sync(() => [...running.values()].map((entry) => entry.label)),
    wait,
    settle
  }
})
