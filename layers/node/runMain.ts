/**
 * runMain for Node: runs a program under Keel's Lifecycle and exits with a code that says how it ended.
 *
 * Effect's own NodeRuntime.runMain has no drain deadline, exits 0 after a signal and lets a second signal
 * kill the process without finalizers. This one wires the signals to the Lifecycle, lets `Lifecycle.run`
 * walk the drain phases within one deadline, logs the shutdown report and exits:
 * 0 after success or a clean drain, 1 after a failure or a forced drain, 130 / 143 after a second
 * SIGINT / SIGTERM. Logging is configured once, here at the root.
 */
import { Cause, Effect, Exit, Layer, Logger } from "effect"
import { Lifecycle } from "keel"
import * as Signals from "./Signals.js"

export interface RunMainOptions extends Lifecycle.Options {
  /** Default `pretty` on a terminal, `logfmt` otherwise. */
  readonly logger?: "pretty" | "logfmt" | "json"
}

// On a terminal each log line first clears the current line, so a status line redrawn in place (a
// progress display) is replaced by the log instead of having it appended.
const prettyOnTerminal = Logger.replace(
  Logger.defaultLogger,
  Logger.make<unknown, void>((options) => {
    if (process.stdout.isTTY) process.stdout.write("\r\x1b[2K")
    Logger.prettyLoggerDefault.log(options)
  })
)

const loggerLayer = (choice: RunMainOptions["logger"]) => {
  const chosen = choice ?? (process.stderr.isTTY ? "pretty" : "logfmt")
  return chosen === "pretty" ? prettyOnTerminal : chosen === "json" ? Logger.json : Logger.logFmt
}

/** The whole run as an Effect that yields the exit code; `runMain` executes it and exits. */
export const runToExitCode = <A, E>(
  program: Effect.Effect<A, E, Lifecycle.Lifecycle>,
  options: RunMainOptions = {}
): Effect.Effect<number> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    yield* Signals.listen(lifecycle)
    const result = yield* Lifecycle.run(program)
    const code = Lifecycle.exitCode(result)
    if (Exit.isFailure(result.exit) && !Lifecycle.isShutdownCause(result.exit.cause)) {
      yield* Effect.logError("program failed", result.exit.cause)
    }
    return code
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.merge(Lifecycle.layer(options), loggerLayer(options.logger))),
    Effect.catchAllCause((cause) =>
      Effect.as(Effect.logError("could not start", cause).pipe(Effect.provide(loggerLayer(options.logger))), 1)
    )
  )

export const runMain = <A, E>(program: Effect.Effect<A, E, Lifecycle.Lifecycle>, options: RunMainOptions = {}): void => {
  // A program that only waits (for a signal, on a Deferred) leaves Node nothing to do; this keeps the
  // process up until the program has ended.
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1)
  Effect.runFork(runToExitCode(program, options)).addObserver((exit) => {
    clearInterval(keepAlive)
    if (Exit.isFailure(exit)) process.stderr.write(`${Cause.pretty(exit.cause)}\n`)
    process.exit(Exit.isSuccess(exit) ? exit.value : 1)
  })
}
