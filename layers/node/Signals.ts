/**
 * Process signals → Lifecycle.
 *
 * Node's default for SIGINT/SIGTERM kills the process without running a single finalizer, and Effect's
 * NodeRuntime.runMain removes its listeners after the first signal, so a second Ctrl+C does exactly that.
 * Here the listeners stay for the whole run and each signal moves the Lifecycle's shutdown one step on: the
 * first starts it, one during the pre-stop delay skips the delay, one during the drain escalates (stop
 * waiting; finalizers still run, exit 130/143), and only one after that exits at once, for an operator
 * whose finalizers hang.
 */
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type { Lifecycle } from "keel"

/**
 * The exit code for each signal, 128 plus its number (SIGINT 130, SIGTERM 143), as a shell reports a
 * process that signal killed. `listen` exits with it on a signal after the drain was escalated.
 */
export const exitCodeForSignal: Record<Lifecycle.SignalName, number> = { SIGINT: 130, SIGTERM: 143 }

/**
 * Routes process signals (default SIGINT and SIGTERM) to `lifecycle.signal` for as long as the Scope is
 * open: the first starts the shutdown, a further one skips the pre-stop delay or escalates the drain, and
 * one the Lifecycle `ignored` (it had escalated already) exits the process at once with
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
      const onSignal = (signal: Lifecycle.SignalName) => {
        Runtime.runFork(runtime)(lifecycle.signal(signal)).addObserver((exit) => {
          if (exit._tag === "Success" && exit.value === "ignored") process.exit(exitCodeForSignal[signal])
        })
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
