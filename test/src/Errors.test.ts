/**
 * Errors: context stacking at boundaries, readable chains for failures, defects and interruptions, and
 * the joined task's error channel that keeps "failed" and "panicked" apart.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Duration, Effect, Exit, Fiber } from "effect"
import { Invalid, render, rootError, TaskFailed, TaskPanicked, Timeout, Unavailable, WithContext, joinTask, withContext } from "keel"

class IpmiTimeout extends Data.TaggedError("IpmiTimeout")<{ readonly host: string }> {
  override get message() {
    return "timeout"
  }
}

const readSensors = Effect.fail(new IpmiTimeout({ host: "bmc-7" })).pipe(withContext("IPMI command failed"))
const runDiagnostics = readSensors.pipe(withContext("GPU diagnostic failed"))

describe("withContext and render", () => {
  it.effect("stacks context outermost first, like anyhow's chain", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(runDiagnostics)
      expect(Exit.isFailure(exit) && render(exit.cause)).toBe("GPU diagnostic failed: IPMI command failed: timeout")
    }))

  it.effect("keeps the typed error reachable under the context", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(runDiagnostics)
      expect(error).toBeInstanceOf(WithContext)
      expect(error.context).toBe("GPU diagnostic failed")
      const root = rootError(rootError(error))
      expect(root).toEqual(new IpmiTimeout({ host: "bmc-7" }))
      const recovered = yield* runDiagnostics.pipe(
        Effect.catchTag("WithContext", (wrapped) => Effect.succeed(`host ${rootError(rootError(wrapped)).host}`))
      )
      expect(recovered).toBe("host bmc-7")
    }))

  it.effect("a defect keeps its context and is marked as a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Effect.sync(() => {
          throw new Error("index out of range")
        }).pipe(withContext("worker task failed"))
      )
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(Exit.isFailure(exit) && render(exit.cause)).toBe("defect: worker task failed: index out of range")
    }))

  it.effect("an interruption is not a failure and gets no context", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.interrupt.pipe(withContext("worker task failed")))
      expect(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)).toBe(true)
      expect(Exit.isFailure(exit) && render(exit.cause)).toBe("interrupted")
    }))

  it.effect("concurrent failures each get a line", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Effect.all([
          Effect.fail(new Invalid({ reason: "no such kind" })),
          Effect.fail(new Unavailable({ reason: "database" }))
        ], { concurrency: 2, mode: "default" }).pipe(withContext("batch failed"))
      )
      const lines = Exit.isFailure(exit) ? render(exit.cause).split("\n") : []
      expect(lines[0]).toMatch(/^batch failed: (invalid: no such kind|unavailable: database)$/)
    }))

  it("Keel's own errors describe themselves with the fields that matter", () => {
    expect(new Timeout({ after: Duration.seconds(5) }).message).toBe("timed out after 5s")
    expect(render(Cause.fail(new Unavailable({ reason: "db", retryAfter: Duration.seconds(3) }))))
      .toBe("unavailable: db (retry after 3s)")
    expect(render(Cause.fail(new Invalid({ reason: "kind must be sleep or flaky" }))))
      .toBe("invalid: kind must be sleep or flaky")
  })
})

describe("joinTask (the double ?)", () => {
  it.effect("keeps a task's typed failure and its panic apart, each naming the task", () =>
    Effect.gen(function*() {
      const failing = yield* Effect.fork(Effect.fail(new Invalid({ reason: "bad row" })))
      const dying = yield* Effect.fork(Effect.die(new Error("null pointer")))
      const fine = yield* Effect.fork(Effect.succeed(42))
      expect(yield* Effect.flip(joinTask("import rows", failing))).toEqual(
        new TaskFailed({ task: "import rows", error: new Invalid({ reason: "bad row" }) })
      )
      const panicked = yield* Effect.flip(joinTask("resize image", dying))
      expect(panicked).toBeInstanceOf(TaskPanicked)
      expect(panicked.message).toBe("task resize image panicked: null pointer")
      expect(yield* joinTask("answer", fine)).toBe(42)
    }))

  it.effect("an interrupted task interrupts its joiner instead of inventing an error", () =>
    Effect.gen(function*() {
      const sleeper = yield* Effect.fork(Effect.never)
      yield* Fiber.interrupt(sleeper)
      const exit = yield* Effect.exit(joinTask("sleeper", sleeper))
      expect(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)).toBe(true)
    }))
})
