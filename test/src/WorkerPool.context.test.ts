/**
 * What a job carries from where it was submitted to where it runs: its deadline (it is not started after it,
 * and not let run past it) and, with tracing on, its trace (each attempt is a span that continues the
 * submitter's trace and links to its span).
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, Option, TestClock } from "effect"
import { Backoff, DeadlineExceeded, Lifecycle, Middleware, Timeout, WorkerPool } from "keel"
import { recordingTracer } from "../support/recordingTracer.js"

const withLifecycle = Effect.provide(Lifecycle.layer({ drainTimeout: "1 minute" }))

/** A one-worker pool whose handler sleeps `ms` (from the payload) and records what it saw. */
const sleepingPool = (options: Partial<WorkerPool.Options<number, Timeout, never>> = {}) =>
  Effect.gen(function*() {
    const started: Array<{ readonly payload: number; readonly deadlineLeft: Option.Option<Duration.Duration> }> = []
    const outcomes: Array<WorkerPool.Outcome<number>> = []
    const pool = yield* WorkerPool.make<number, Timeout>({
      capacity: 10,
      workers: 1,
      handler: (ms) =>
        Effect.gen(function*() {
          started.push({ payload: ms, deadlineLeft: yield* Middleware.remaining })
          yield* Effect.sleep(Duration.millis(ms))
          return ms
        }),
      onOutcome: (outcome) => Effect.sync(() => void outcomes.push(outcome)),
      ...options
    })
    return { pool, started, outcomes }
  })

const failureOf = (outcome: WorkerPool.Outcome<number> | undefined) =>
  outcome?._tag === "Failed" ? Cause.failureOption(outcome.failure.cause) : Option.none()

describe("WorkerPool: a job's deadline", () => {
  it.scoped("a job whose deadline passed while it was queued is not started: it fails with DeadlineExceeded", () =>
    Effect.gen(function*() {
      const { outcomes, pool, started } = yield* sleepingPool()
      yield* pool.submit(1_000) // holds the only worker for 1 s
      yield* pool.submit(5, { id: "late", deadline: "500 millis" })
      yield* TestClock.adjust("2 seconds")
      yield* pool.awaitIdle
      expect(started.map((job) => job.payload)).toEqual([1_000])
      const late = outcomes.find((outcome) => outcome._tag === "Failed")
      expect(failureOf(late)).toEqual(
        Option.some(new DeadlineExceeded({ id: "late", when: "before-start", late: Duration.millis(500) }))
      )
      expect(late?._tag === "Failed" && late.failure.attempts).toBe(0)
    }).pipe(withLifecycle))

  it.scoped("a job still running at its deadline is interrupted and fails with DeadlineExceeded, not retried", () =>
    Effect.gen(function*() {
      const { outcomes, pool, started } = yield* sleepingPool({ retry: Backoff.exponential({ base: "10 millis", max: "10 millis", maxAttempts: 5 }) })
      yield* pool.submit(3_000, { id: "slow", deadline: "1 second" })
      yield* TestClock.adjust("5 seconds")
      yield* pool.awaitIdle
      expect(started).toHaveLength(1)
      expect(failureOf(outcomes[0])).toEqual(
        Option.some(new DeadlineExceeded({ id: "slow", when: "while-running", late: Duration.zero }))
      )
    }).pipe(withLifecycle))

  it.scoped("the handler runs within the deadline: calls it makes see what is left of it", () =>
    Effect.gen(function*() {
      const { outcomes, pool, started } = yield* sleepingPool()
      yield* pool.submit(100, { deadline: "2 seconds" })
      yield* pool.submit(100) // no deadline: none inside either
      yield* TestClock.adjust("1 second")
      yield* pool.awaitIdle
      expect(started.map((job) => Option.map(job.deadlineLeft, Duration.toMillis))).toEqual([
        Option.some(2_000),
        Option.none()
      ])
      expect(outcomes.map((outcome) => outcome._tag)).toEqual(["Completed", "Completed"])
    }).pipe(withLifecycle))

  it.scoped("a job submitted under Middleware.deadline carries the caller's deadline; the sooner one wins", () =>
    Effect.gen(function*() {
      const { pool, started } = yield* sleepingPool()
      const deadline = yield* Middleware.deadline({ after: "3 seconds" })
      const submit = deadline((options: WorkerPool.SubmitOptions) => pool.submit(10, options))
      yield* submit({})
      yield* submit({ deadline: "1 second" })
      yield* submit({ deadline: "1 minute" })
      yield* TestClock.adjust("1 second")
      yield* pool.awaitIdle
      expect(started.map((job) => Option.map(job.deadlineLeft, Duration.toMillis))).toEqual([
        Option.some(3_000),
        Option.some(990), // started after the first job's 10 ms
        Option.some(2_980)
      ])
    }).pipe(withLifecycle))
})

describe("WorkerPool: a job's trace", () => {
  it.scoped("each attempt is a consumer span that continues the submitter's trace and links to its span", () => {
    const recording = recordingTracer()
    return Effect.gen(function*() {
      const attempts = { count: 0 }
      const pool = yield* WorkerPool.make<string, Timeout>({
        name: "mail",
        capacity: 10,
        workers: 1,
        retry: Backoff.exponential({ base: "10 millis", max: "10 millis", maxAttempts: 3 }),
        handler: () =>
          Effect.suspend(() =>
            ++attempts.count < 2 ? Effect.fail(new Timeout({ after: Duration.seconds(1) })) : Effect.succeed("sent")
          )
      })
      yield* pool.submit("hello", { id: "mail-1" }).pipe(Effect.withSpan("POST /mail"))
      yield* TestClock.adjust("1 second")
      yield* pool.awaitIdle
      const [request] = recording.named("POST /mail")
      const spans = recording.named("process mail")
      expect(spans.map((span) => [span.attributes.get("keel.job.attempt"), span.attributes.get("keel.job.outcome")]))
        .toEqual([[1, "failed"], [2, "completed"]])
      for (const span of spans) {
        expect(span.kind).toBe("consumer")
        expect(span.traceId).toBe(request!.traceId)
        expect(Option.map(span.parent, (parent) => parent.spanId)).toEqual(Option.some(request!.spanId))
        expect(span.links.map((link) => link.span.spanId)).toEqual([request!.spanId])
        expect(span.attributes.get("messaging.message.id")).toBe("mail-1")
        expect(span.attributes.get("messaging.destination.name")).toBe("mail")
      }
      expect(Exit.isFailure((spans[0]!.status as { exit: Exit.Exit<unknown, unknown> }).exit)).toBe(true)
    }).pipe(Effect.withTracer(recording.tracer), withLifecycle)
  })

  it.scoped("a job submitted outside any span starts a trace of its own; with tracing off no span is made", () => {
    const recording = recordingTracer()
    const poolRunning = (name: string) =>
      WorkerPool.make<string>({ name, capacity: 10, workers: 1, handler: () => Effect.void })
    return Effect.gen(function*() {
      const traced = yield* poolRunning("traced")
      yield* Effect.withSpan(Effect.void, "unrelated") // a span that ended before the submit
      yield* traced.submit("a")
      yield* traced.awaitIdle
      const [own] = recording.named("process traced")
      expect(Option.isNone(own!.parent)).toBe(true)
      expect(own!.links).toEqual([])

      const untraced = yield* poolRunning("untraced").pipe(Effect.withTracerEnabled(false))
      yield* untraced.submit("b").pipe(Effect.withSpan("POST /b"))
      yield* untraced.awaitIdle
      expect(recording.named("POST /b")).toHaveLength(1)
      expect(recording.named("process untraced")).toEqual([])
    }).pipe(Effect.withTracer(recording.tracer), withLifecycle)
  })
})
