/**
 * Waiters — fibers waiting until a condition on plain in-memory state holds.
 *
 * The pool's idle check, the tracker's "closed and empty" and the task group's joins all keep their state
 * in ordinary fields for speed, and need fibers to wait on it. `until(condition)` returns at once when the
 * condition holds, otherwise waits to be woken and checks again; `wake()` is called after every change
 * that may matter and costs nothing when no one waits. A waiter that is interrupted leaves the list.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"

export interface Waiters {
  readonly until: (condition: () => boolean) => Effect.Effect<void>
  readonly wake: () => void
}

export const make = (): Waiters => {
  let waiters: Array<Deferred.Deferred<void>> = []

  const wake = () => {
    if (waiters.length === 0) return
    const woken = waiters
    waiters = []
    for (const waiter of woken) Deferred.unsafeDone(waiter, Exit.void)
  }

  const until = (condition: () => boolean): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (condition()) return Effect.void
      const waiter = Deferred.unsafeMake<void>(FiberId.none)
      waiters.push(waiter)
      return Deferred.await(waiter).pipe(
        Effect.onInterrupt(() => Effect.sync(() => void (waiters = waiters.filter((other) => other !== waiter)))),
        Effect.zipRight(until(condition))
      )
    })

  return { until, wake }
}
