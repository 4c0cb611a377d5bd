/**
 * A WorkerPool scenario driven entirely by TestClock: a producer submits scripted jobs, the Lifecycle
 * starts draining at a chosen instant, and every outcome is recorded with the virtual time it was decided.
 * The properties in WorkerPool.prop.test.ts state what must hold of such a record.
 */
import { Clock, Duration, Effect, Fiber, Option, TestClock } from "effect"
import { FastCheck as fc } from "effect"
import { Lifecycle, WorkerPool } from "keel"

export type JobKind = "ok" | "fail" | "throw"

export interface JobSpec {
  readonly durationMs: number
  readonly kind: JobKind
}

export interface Scenario {
  readonly workers: number
  readonly capacity: number
  readonly jobs: ReadonlyArray<JobSpec>
  readonly shutdownAtMs: number
  readonly drainTimeoutMs: number
  readonly policy: WorkerPool.ShutdownPolicy
}

export const scenarioArbitrary = (limits: { readonly maxDurationMs: number; readonly maxJobs: number }) =>
  fc.record({
    workers: fc.integer({ min: 1, max: 4 }),
    capacity: fc.integer({ min: 1, max: 8 }),
    jobs: fc.array(
      fc.record({
        durationMs: fc.integer({ min: 0, max: limits.maxDurationMs }),
        kind: fc.constantFrom<JobKind>("ok", "ok", "ok", "fail", "throw")
      }),
      { maxLength: limits.maxJobs }
    ),
    shutdownAtMs: fc.integer({ min: 0, max: 400 }),
    drainTimeoutMs: fc.integer({ min: 1, max: 400 }),
    policy: fc.constantFrom<WorkerPool.ShutdownPolicy>("drain", "handBack")
  })

export interface Recorded {
  readonly outcome: WorkerPool.Outcome<number>
  readonly atMs: number
}

export interface ScenarioRun {
  /** Ids offered to `submit`, whether or not it returned. */
  readonly attempted: ReadonlyArray<string>
  /** Ids whose `submit` returned: accepted for certain. */
  readonly confirmed: ReadonlyArray<string>
  readonly startedAtMs: ReadonlyMap<string, number>
  readonly outcomes: ReadonlyMap<string, ReadonlyArray<Recorded>>
  readonly report: Lifecycle.ShutdownReport
  readonly stats: WorkerPool.Stats
}

class ScriptedFailure {
  readonly _tag = "ScriptedFailure"
}

export const runScenario = (scenario: Scenario): Effect.Effect<ScenarioRun> =>
  Effect.gen(function*() {
    const attempted: Array<string> = []
    const confirmed: Array<string> = []
    const startedAtMs = new Map<string, number>()
    const outcomes = new Map<string, Array<Recorded>>()
    let pool: WorkerPool.WorkerPool<number> | undefined

    const idOf = (outcome: WorkerPool.Outcome<number>) =>
      outcome._tag === "Completed" ? outcome.job.id : outcome._tag === "Failed" ? outcome.failure.job.id : outcome.unfinished.job.id

    const handler = (index: number, job: WorkerPool.JobContext) =>
      Effect.gen(function*() {
        startedAtMs.set(job.id, yield* Clock.currentTimeMillis)
        const spec = scenario.jobs[index]!
        yield* Effect.sleep(Duration.millis(spec.durationMs))
        if (spec.kind === "fail") return yield* Effect.fail(new ScriptedFailure())
        if (spec.kind === "throw") yield* Effect.sync(() => { throw new Error(`job ${index} threw`) })
      })

    const program = Effect.gen(function*() {
      pool = yield* WorkerPool.make({
        name: "scenario",
        capacity: scenario.capacity,
        workers: scenario.workers,
        handler,
        onShutdown: scenario.policy,
        deadLetter: () => Effect.void,
        handBack: () => Effect.void,
        onOutcome: (outcome) =>
          Effect.map(Clock.currentTimeMillis, (atMs) => {
            const id = idOf(outcome)
            outcomes.set(id, [...(outcomes.get(id) ?? []), { outcome, atMs }])
          })
      })
      yield* Effect.forEach(scenario.jobs, (_, index) => {
        const id = `job-${index}`
        attempted.push(id)
        return Effect.map(pool!.submit(index, { id }), (accepted) => void confirmed.push(accepted))
      }, { discard: true }).pipe(Effect.catchTag("ShuttingDown", () => Effect.void))
      yield* Effect.never
    }).pipe(Effect.scoped)

    const running = yield* Effect.fork(Lifecycle.run(program))
    yield* TestClock.adjust(Duration.millis(scenario.shutdownAtMs))
    yield* Lifecycle.shutdown("scenario")
    yield* TestClock.adjust(Duration.millis(scenario.drainTimeoutMs + 10_000))
    const result = yield* Fiber.join(running)
    const report = Option.getOrThrow(result.report)
    return { attempted, confirmed, startedAtMs, outcomes, report, stats: yield* pool!.stats }
  }).pipe(Effect.provide(Lifecycle.layer({ drainTimeout: Duration.millis(scenario.drainTimeoutMs) })), Effect.orDie)
