/**
 * Process signals → Lifecycle.
 *
 * Node's default for SIGINT/SIGTERM kills the process without running a single finalizer, and Effect's
 * NodeRuntime.runMain removes its listeners after the first signal, so a second Ctrl+C does exactly that.
 * Here the listeners stay for the whole run: the first signal starts draining, the second escalates
 * (stop waiting; finalizers still run, exit 130/143), and only a third one exits at once, for an
 * operator whose finalizers hang.
 */
import { Effect, Runtime } from "effect"
import type { Scope } from "effect"
import type { Lifecycle } from "keel"

export const exitCodeForSignal: Record<Lifecycle.SignalName, number> = { SIGINT: 130, SIGTERM: 143 }

/** Routes SIGINT and SIGTERM to the Lifecycle for as long as the Scope is open. */
export const listen = (
  lifecycle: Lifecycle.LifecycleService,
  signals: ReadonlyArray<Lifecycle.SignalName> = ["SIGINT", "SIGTERM"]
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.map(Effect.runtime<never>(), (runtime) => {
      let received = 0
      const onSignal = (signal: Lifecycle.SignalName) => {
        received++
        if (received >= 3) process.exit(exitCodeForSignal[signal])
        Runtime.runFork(runtime)(lifecycle.signal(signal))
      }
      const listeners = signals.map((signal) => {
        const listener = () => onSignal(signal)
        process.on(signal, listener)
        return [signal, listener] as const
      })
      return listeners
    }),
    (listeners) => Effect.sync(() => listeners.forEach(([signal, listener]) => process.off(signal, listener)))
  )
