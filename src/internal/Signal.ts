/**
 * Signal — a one-shot event that fibers can await and plain callbacks can listen to.
 *
 * A lease's "lost" is one: a fiber may await it, and `WorkerPool.consume` listens to it with a callback that
 * interrupts the job's fiber, so that a running job needs no watcher fiber of its own (forking a fiber per job
 * and interrupting it when the job ends costs more than all the rest of a job's bookkeeping). Listeners run
 * synchronously, in the order they were added, when the signal fires; one added after that runs at once.
 */
import * as Effect from "effect/Effect"

export interface Signal {
  /** Whether it has fired. */
  readonly fired: () => boolean
  /** Fires the signal (once; later calls do nothing). */
  readonly fire: () => void
  /** Waits until the signal has fired. */
  readonly await: Effect.Effect<void>
  /** Calls `listener` when the signal fires (at once if it has); the returned function stops listening. */
  readonly listen: (listener: () => void) => () => void
}

export const make = (): Signal => {
  let fired = false
  let listeners: Set<() => void> | undefined

  const listen = (listener: () => void) => {
    if (fired) {
      listener()
      return () => {}
    }
    ;(listeners ??= new Set()).add(listener)
    return () => void listeners?.delete(listener)
  }

  const fire = () => {
    if (fired) return
    fired = true
    const called = listeners
    listeners = undefined
    if (called !== undefined) for (const listener of called) listener()
  }

  const awaitFired = Effect.suspend(() =>
    fired ? Effect.void : Effect.async<void>((resume) => {
      const stop = listen(() => resume(Effect.void))
      return Effect.sync(stop)
    })
  )

  return { fired: () => fired, fire, await: awaitFired, listen }
}
