/**
 * Errors: context stacking at boundaries, readable chains for failures, defects and interruptions, and
 * the joined task's error channel that keeps "failed" and "panicked" apart.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Duration, Effect, Equal, Exit, Fiber, TestClock } from "effect"
import {
  Backoff,
  contextOf,
  Invalid,
  joinTask,
  Middleware,
  render,
  TaskFailed,
  TaskPanicked,
  Timeout,
  Unavailable,
  withContext
} from "keel"

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

  it.effect("the error keeps its class, tag and fields under the context, which travels beside it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(runDiagnostics)
      expect(error).toBeInstanceOf(IpmiTimeout)
      expect(error._tag).toBe("IpmiTimeout")
      expect(error.host).toBe("bmc-7")
      expect(contextOf(error)).toEqual(["GPU diagnostic failed", "IPMI command failed"])
      // The context is not part of the value: it equals the bare error, and the bare error has none.
      const bare = new IpmiTimeout({ host: "bmc-7" })
      expect(Equal.equals(error, bare)).toBe(true)
      expect(contextOf(bare)).toEqual([])
      const recovered = yield* runDiagnostics.pipe(
        Effect.catchTag("IpmiTimeout", (timeout) => Effect.succeed(`host ${timeout.host}: ${contextOf(timeout).join(" / ")}`))
      )
      expect(recovered).toBe("host bmc-7: GPU diagnostic failed / IPMI command failed")
      const byTags = yield* Effect.fail(new Invalid({ reason: "no such kind" })).pipe(
        withContext("parsing the request"),
        Effect.catchTags({ Invalid: (invalid) => Effect.succeed(invalid.reason) })
      )
      expect(byTags).toBe("no such kind")
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

describe("context does not hide the error from what decides on it", () => {
  // Calls a dependency that always fails with `error`, and counts how often it was called.
  const failingCall = (error: Timeout | Invalid) => {
    let calls = 0
    const call = Effect.suspend(() => {
      calls++
      return Effect.fail(error)
    })
    return { call, calls: () => calls }
  }
  const timeout = new Timeout({ after: Duration.seconds(1) })

  it.effect("Backoff.isRetryable: a Timeout under context is retried as often as a bare one; Invalid never", () =>
    Effect.gen(function*() {
      const policy = Backoff.exponential({ base: "10 millis", max: "100 millis", maxAttempts: 3, jitter: "none" })
      const attempts = (call: Effect.Effect<never, Timeout | Invalid>, count: () => number) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(Effect.exit(Effect.retry(call, policy)))
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(fiber)
          return count()
        })
      const bare = failingCall(timeout)
      const wrapped = failingCall(timeout)
      expect(yield* attempts(bare.call, bare.calls)).toBe(3)
      expect(yield* attempts(wrapped.call.pipe(withContext("reading sensors")), wrapped.calls)).toBe(3)
      expect(Backoff.isRetryable(yield* Effect.flip(wrapped.call.pipe(withContext("reading sensors"))))).toBe(true)
      const invalid = failingCall(new Invalid({ reason: "bad input" }))
      expect(yield* attempts(invalid.call.pipe(withContext("reading sensors")), invalid.calls)).toBe(1)
    }))

  it.effect("Middleware.retry's default predicate and a breaker's isFailure see the error under context", () =>
    Effect.gen(function*() {
      const retry = yield* Middleware.retry({ backoff: { base: "10 millis", max: "10 millis", maxAttempts: 3 }, budget: false })
      const dependency = failingCall(timeout)
      const service = retry(() => dependency.call.pipe(withContext("calling the gateway")))
      const fiber = yield* Effect.fork(Effect.exit(service(undefined)))
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.join(fiber)
      expect(dependency.calls()).toBe(3)
      expect(Exit.isFailure(exit) && render(exit.cause)).toBe("calling the gateway: timed out after 1s")

      const breaker = yield* Middleware.circuitBreaker<Timeout>({
        policy: { kind: "consecutive", failures: 2 },
        openFor: "10 seconds",
        isFailure: (error) => error._tag === "Timeout"
      })
      const guarded = breaker(() => Effect.fail(timeout).pipe(withContext("calling the gateway")))
      yield* Effect.exit(guarded(undefined))
      yield* Effect.exit(guarded(undefined))
      expect((yield* breaker.state)._tag).toBe("Open")
    }).pipe(Effect.scoped))
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
