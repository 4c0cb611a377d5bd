/**
 * Logs that join the trace: runMain's `json` and `logfmt` loggers put the current span's trace id and span id
 * on a line written inside a span, and nothing on a line outside one; with keel/otel the ids are those of the
 * spans the collector receives. The format can come from `LOG_FORMAT`. Lines are captured from the Console
 * the loggers write to, through the public `runToExitCode`.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Console, Effect } from "effect"
import type { Tracer } from "effect"
import { runToExitCode } from "keel/node"
import { Otel } from "keel/otel"
import * as OtlpReceiver from "../../support/otlpReceiver.js"

/** `effect` with every line logged to the Console collected, and the lines. */
const capturingLines = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const console = yield* Effect.console
    const capturing: Console.Console = {
      ...console,
      unsafe: { ...console.unsafe, log: (...args: ReadonlyArray<unknown>) => void lines.push(args.map(String).join(" ")) }
    }
    const result = yield* Effect.withConsole(effect, capturing)
    return { result, lines }
  })

const withEnv = (env: Record<string, string>) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.withConfigProvider(effect, ConfigProvider.fromMap(new Map(Object.entries(env))))

/** Logs `outside` and, inside the span `charge`, `inside`; yields that span. */
const chargeCard = Effect.gen(function*() {
  yield* Effect.log("outside")
  return yield* Effect.gen(function*() {
    yield* Effect.log("inside")
    return yield* Effect.currentSpan
  }).pipe(Effect.withSpan("charge"))
})

interface JsonLine {
  readonly message: unknown
  readonly annotations: Record<string, unknown>
}

const jsonLine = (lines: ReadonlyArray<string>, message: string): JsonLine => {
  const parsed = lines.map((line) => JSON.parse(line) as JsonLine)
  const found = parsed.find((line) => line.message === message)
  expect(found, `a line "${message}" in\n${lines.join("\n")}`).toBeDefined()
  return found!
}

const logfmtLine = (lines: ReadonlyArray<string>, message: string): string => {
  const found = lines.find((line) => line.includes(`message=${message}`))
  expect(found, `a line "${message}" in\n${lines.join("\n")}`).toBeDefined()
  return found!
}

describe("runMain's loggers", () => {
  it.live("json: a line inside a span has its trace_id and span_id, a line outside has neither", () =>
    Effect.gen(function*() {
      let span: Tracer.Span | undefined
      const { result, lines } = yield* capturingLines(
        runToExitCode(Effect.map(chargeCard, (inner) => void (span = inner)), { logger: "json" })
      )
      expect(result).toBe(0)
      expect(jsonLine(lines, "inside").annotations).toEqual({ trace_id: span!.traceId, span_id: span!.spanId })
      expect(jsonLine(lines, "outside").annotations).toEqual({})
    }))

  it.live("logfmt: a line inside a span has its trace_id and span_id, a line outside has neither", () =>
    Effect.gen(function*() {
      let span: Tracer.Span | undefined
      const { result, lines } = yield* capturingLines(
        runToExitCode(Effect.map(chargeCard, (inner) => void (span = inner)), { logger: "logfmt" })
      )
      expect(result).toBe(0)
      const inside = logfmtLine(lines, "inside")
      expect(inside).toContain(` trace_id=${span!.traceId}`)
      expect(inside).toContain(` span_id=${span!.spanId}`)
      expect(logfmtLine(lines, "outside")).not.toMatch(/trace_id|span_id/)
    }))

  it.live("annotations of the program's own stay beside the ids", () =>
    Effect.gen(function*() {
      const { lines } = yield* capturingLines(
        runToExitCode(chargeCard.pipe(Effect.annotateLogs("customer", "c-9")), { logger: "json" })
      )
      expect(Object.keys(jsonLine(lines, "inside").annotations).sort()).toEqual(["customer", "span_id", "trace_id"])
      expect(jsonLine(lines, "outside").annotations).toEqual({ customer: "c-9" })
    }))

  it.scopedLive("under keel/otel the ids on a line are those of the span the collector receives", () =>
    Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      const traced = chargeCard.pipe(
        Effect.provide(Otel.layer({ serviceName: "payments", tracesEndpoint: receiver.tracesEndpoint }))
      )
      const { lines } = yield* capturingLines(runToExitCode(traced, { logger: "json" }))
      const [charge] = yield* receiver.spans
      expect(charge?.name).toBe("charge")
      expect(jsonLine(lines, "inside").annotations).toEqual({ trace_id: charge!.traceId, span_id: charge!.spanId })
    }))

  it.live("LOG_FORMAT chooses the format when the options do not, and the option wins over it", () =>
    Effect.gen(function*() {
      const fromEnv = yield* capturingLines(runToExitCode(chargeCard).pipe(withEnv({ LOG_FORMAT: "json" })))
      expect(jsonLine(fromEnv.lines, "inside").annotations).toHaveProperty("trace_id")
      const optionWins = yield* capturingLines(
        runToExitCode(chargeCard, { logger: "logfmt" }).pipe(withEnv({ LOG_FORMAT: "json" }))
      )
      expect(logfmtLine(optionWins.lines, "inside")).toContain("trace_id=")
    }))

  it.live("a LOG_FORMAT that names no format stops the start with exit code 1, naming the variable", () =>
    Effect.gen(function*() {
      let ran = false
      const { result, lines } = yield* capturingLines(
        runToExitCode(Effect.sync(() => void (ran = true))).pipe(withEnv({ LOG_FORMAT: "xml" }))
      )
      expect(result).toBe(1)
      expect(ran).toBe(false)
      const output = lines.join("\n")
      expect(output).toContain("could not start")
      expect(output).toContain("Invalid data at LOG_FORMAT")
      expect(output).toMatch(/Expected one of \(pretty, logfmt, json\) but received .*xml/)
    }))
})
