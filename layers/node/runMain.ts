/**
 * runMain for Node: runs a program under Keel's Lifecycle and exits with a code that says how it ended.
 *
 * Effect's own NodeRuntime.runMain has no drain deadline, exits 0 after a signal and lets a second signal
 * kill the process without finalizers. This one wires the signals to the Lifecycle, lets `Lifecycle.run`
 * walk the drain phases within one deadline, logs the shutdown report and exits:
 * 0 after success or a clean drain, 1 after a failure or a forced drain, 130 / 143 after a second
 * SIGINT / SIGTERM. Logging is configured once, here at the root, in the format the options or `LOG_FORMAT`
 * choose.
 *
 * Logs and traces meet on the ids: in the formats meant for log collectors (`logfmt`, `json`), a line written
 * inside a span carries the span's `trace_id` and `span_id` as annotations, so a log backend can link the line
 * to its trace (and to the spans `keel/otel` exports, whose ids they are). The logger reads the span from the
 * fiber's context it is handed with each entry; a line outside any span costs two map lookups and allocates
 * nothing more.
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { Lifecycle } from "keel"
import * as Signals from "./Signals.js"

/** Options of `runMain` and `runToExitCode`: the Lifecycle's options, plus how logs are written. */
export interface RunMainOptions extends Lifecycle.Options {
  /**
   * The log format for the whole run: `pretty` (for people), `logfmt` or `json` (one line per entry, for log
   * collectors; a line written inside a span has the span's `trace_id` and `span_id` among its annotations).
   * When not given, the environment variable `LOG_FORMAT` chooses, with the same three names; when that is
   * unset too, `pretty` when standard error is a terminal, `logfmt` otherwise.
   */
  readonly logger?: "pretty" | "logfmt" | "json"
  /**
   * A tracer for the whole run, such as keel/otel's `Otel.fromEnv()`: provided around the Lifecycle as well as
   * the program, so that the shutdown is traced too (a `shutdown` span with its phases and each component's
   * drain) and the spans are flushed after the drain. A layer that cannot be built stops the start like a bad
   * setting (`could not start`, exit code 1). Default: none (Effect's own tracer, nothing exported).
   */
  readonly tracing?: Layer.Layer<never, unknown>
}

/** The formats `runMain` writes logs in. */
type LogFormat = NonNullable<RunMainOptions["logger"]>

// On a terminal each log line first clears the current line, so a status line redrawn in place (a
// progress display) is replaced by the log instead of having it appended.
const prettyOnTerminal = Logger.replace(
  Logger.defaultLogger,
  Logger.make<unknown, void>((options) => {
    if (process.stdout.isTTY) process.stdout.write("\r\x1b[2K")
    Logger.prettyLoggerDefault.log(options)
  })
)

/** `logger` with the current span's ids among the annotations of each entry written inside a span. */
const withTraceIds = <Message, Output>(logger: Logger.Logger<Message, Output>): Logger.Logger<Message, Output> =>
  Logger.mapInputOptions(logger, (entry: Logger.Logger.Options<Message>) => {
    const span = Context.getOption(FiberRefs.getOrDefault(entry.context, FiberRef.currentContext), Tracer.ParentSpan)
    if (Option.isNone(span)) return entry
    const { traceId, spanId } = span.value
    return { ...entry, annotations: HashMap.set(HashMap.set(entry.annotations, "trace_id", traceId), "span_id", spanId) }
  })

const loggers: Record<LogFormat, Layer.Layer<never>> = {
  pretty: prettyOnTerminal,
  logfmt: Logger.replace(Logger.defaultLogger, Logger.withConsoleLog(withTraceIds(Logger.logfmtLogger))),
  json: Logger.replace(Logger.defaultLogger, Logger.withConsoleLog(withTraceIds(Logger.jsonLogger)))
}

const formatForTerminal = (): LogFormat => (process.stderr.isTTY ? "pretty" : "logfmt")

/** The format `choice` names, else `LOG_FORMAT`'s, else the one for where standard error goes. */
const chosenLogFormat = (choice: LogFormat | undefined): Effect.Effect<LogFormat, ConfigError.ConfigError> =>
  choice !== undefined
    ? Effect.succeed(choice)
    : Effect.suspend(() => Config.literal("pretty", "logfmt", "json")("LOG_FORMAT").pipe(Config.withDefault(formatForTerminal())))

const loggerLayer = <E>(format: Effect.Effect<LogFormat, E>): Layer.Layer<never, E> =>
  Layer.unwrapEffect(Effect.map(format, (chosen) => loggers[chosen]))

/**
 * The whole run as an Effect that yields the exit code; `runMain` executes it and exits. It provides
 * `Lifecycle.layer(options)` and the logger, listens to SIGINT and SIGTERM while it runs, runs `program`
 * with `Lifecycle.run` and returns `Lifecycle.exitCode` of the result (0, 1, 130 or 143). A program that
 * failed (not merely stopped by the drain) is logged as `program failed`. Never fails: if the Lifecycle
 * cannot be built (a `KEEL_*` setting is not a duration) or `LOG_FORMAT` names no format, it logs
 * `could not start` with the ConfigError and yields 1. It does not exit the process.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { runToExitCode } from "keel/node"
 *
 * // {"message":"charged","logLevel":"INFO",…,"annotations":{"trace_id":"fdad…","span_id":"4ff8…"},…}
 * const charge = Effect.log("charged").pipe(Effect.withSpan("charge"))
 *
 * const exitCode: Effect.Effect<number> = runToExitCode(charge, { logger: "json" })
 * ```
 */
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
    Effect.provide(Layer.merge(Lifecycle.layer(options), loggerLayer(chosenLogFormat(options.logger)))),
    Effect.provide(options.tracing ?? Layer.empty),
    Effect.catchAllCause((cause) =>
      Effect.as(
        Effect.logError("could not start", cause).pipe(
          Effect.provide(loggerLayer(Effect.orElseSucceed(chosenLogFormat(options.logger), formatForTerminal)))
        ),
        1
      )
    )
  )

/**
 * Runs `program` as the process's main program, under the Lifecycle with SIGINT and SIGTERM wired to it,
 * then exits the process with the code `runToExitCode` yields: 0 after success or a clean drain, 1 after a
 * failure or a forced drain, 130 / 143 after a second SIGINT / SIGTERM. The process stays up until the
 * program has ended, even if it only waits. Returns at once; call it once, at the entry point. Logs are
 * written in the format `options.logger` names, else `LOG_FORMAT` (`pretty`, `logfmt`, `json`); in `logfmt`
 * and `json` a line written inside a span carries its `trace_id` and `span_id`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "keel"
 * import { runMain } from "keel/node"
 *
 * const service = Effect.gen(function*() {
 *   yield* Effect.fork(Lifecycle.track("request-1", Effect.sleep("300 millis")))
 *   yield* Effect.sleep("50 millis")
 *   yield* Lifecycle.shutdown("demo over") // SIGINT / SIGTERM do the same
 *   yield* Effect.never // the Lifecycle interrupts the program once the tracked work is done
 * })
 *
 * runMain(service, { drainTimeout: "5 seconds", logger: "json" })
 * ```
 */
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
