/**
 * Process signals → Lifecycle.
 *
 * Node's default for SIGINT/SIGTERM kills the process without running a single finalizer, and Effect's
 * NodeRuntime.runMain removes its listeners after the first signal, so a second Ctrl+C does exactly that.
 * Here the listeners stay for the whole run: the first signal starts draining, the second escalates
 * (stop waiting; finalizers still run, exit 130/143), and only a third one exits at once, for an
 * operator whose finalizers hang.
 */
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type { Lifecycle } from "keel"

/**
 * The exit code for each signal, 128 plus its number (SIGINT 130, SIGTERM 143), as a shell reports a
 * process that signal killed. `listen` exits with it on a third signal.
 */
export const exitCodeForSignal: Record<Lifecycle.SignalName, number> = { SIGINT: 130, SIGTERM: 143 }

/**
 * Routes process signals (default SIGINT and SIGTERM) to `lifecycle.signal` for as long as the Scope is
 * open: the first starts draining, the second escalates, and a third exits the process at once with
 * `exitCodeForSignal`, without waiting for finalizers. While listening, these signals no longer kill the
 * process by Node's default. The listeners are removed when the Scope closes. `runMain` calls it; use it
 * directly only in a runner of your own.
 */
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
