/**
 * Properties of WorkerPool under random job durations, failures, thrown exceptions, shutdown instants,
 * deadlines and both drain policies — all in virtual time, with fixed seeds so a failure reproduces and
 * shrinks to a minimal scenario.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, FastCheck as fc, Option, TestClock } from "effect"
import { Lifecycle, QueueFull, WorkerPool } from "keel"
import { runScenario, scenarioArbitrary } from "./poolScenario.js"
import { FiberLeaks, interruptEverywhere, Ledger, PropertyRuns, scenario } from "keel/testing"


const jobIdOf = (outcome: WorkerPool.Outcome<string>) =>
  outcome._tag === "Completed" ? outcome.job.id : outcome._tag === "Failed" ? outcome.failure.job.id : outcome.unfinished.job.id

describe("WorkerPool properties", () => {
  it.effect.prop(
    "every accepted job ends in exactly one outcome, under both drain policies",
    { scenario: scenarioArbitrary({ maxDurationMs: 200, maxJobs: 30 }) },
    ({ scenario }) =>
      Effect.gen(function*() {
        const run = yield* runScenario(scenario)
        // Every job whose submit returned has exactly one outcome.
        for (const id of run.confirmed) expect(run.outcomes.get(id)?.length, id).toBe(1)
        // No job has two outcomes, and only jobs that were offered have any.
        for (const [id, recorded] of run.outcomes) {
          expect(recorded.length, id).toBe(1)
          expect(run.attempted).toContain(id)
        }
        // The counters agree with the outcomes.
        const tags = [...run.outcomes.values()].map((recorded) => recorded[0]!.outcome._tag)
        expect(run.stats.completed).toBe(tags.filter((tag) => tag === "Completed").length)
        expect(run.stats.failed).toBe(tags.filter((tag) => tag === "Failed").length)
        expect(run.stats.unfinished).toBe(tags.filter((tag) => tag === "Unfinished").length)
        expect(run.stats.accepted).toBe(run.outcomes.size)
        // What the report lists as unfinished is exactly the jobs whose outcome is Unfinished.
        const unfinished = [...run.outcomes].filter(([, recorded]) => recorded[0]!.outcome._tag === "Unfinished")
        expect([...run.report.unfinished].sort()).toEqual(unfinished.map(([id]) => id).sort())
        // handBack never starts a job after the drain began; drain never hands back a queued job in time.
        for (const [id, recorded] of unfinished) {
          const outcome = recorded[0]!.outcome
          if (outcome._tag !== "Unfinished") continue
          if (outcome.unfinished.reason !== "interrupted") expect(run.startedAtMs.has(id)).toBe(false)
          if (outcome.unfinished.reason === "handedBack") expect(scenario.policy).toBe("handBack")
        }
        if (scenario.policy === "drain" && run.report.outcome === "clean") expect(unfinished).toEqual([])
      }),
    PropertyRuns.fastCheck(20261121)
  )

  it.effect.prop(
    "the queue never holds more than its capacity, and a producer waits while it is full",
    {
      capacity: fc.integer({ min: 1, max: 10 }),
      workers: fc.integer({ min: 1, max: 4 }),
      producers: fc.integer({ min: 1, max: 3 }),
      jobsPerProducer: fc.integer({ min: 1, max: 15 })
    },
    ({ capacity, jobsPerProducer, producers, workers }) =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        let confirmed = 0
        let started = 0
        let maxWaiting = 0
        const observe = () => (maxWaiting = Math.max(maxWaiting, confirmed - started))
        const pool = yield* WorkerPool.make({
          capacity,
          workers,
          handler: () => Effect.sync(() => (started++, observe())).pipe(Effect.zipRight(Deferred.await(gate)))
        })
        const producing = yield* Effect.forEach(
          Array.from({ length: producers }),
          () =>
            Effect.fork(Effect.forEach(Array.from({ length: jobsPerProducer }), () =>
              Effect.map(pool.submit(0), () => (confirmed++, observe())), { discard: true })),
          { concurrency: "unbounded" }
        )
        yield* TestClock.adjust(Duration.millis(1))
        const total = producers * jobsPerProducer
        // With the workers held, exactly workers + capacity jobs get in; everyone else waits.
        expect(confirmed).toBe(Math.min(total, workers + capacity))
        expect(started).toBe(Math.min(total, workers))
        if (total > workers + capacity) {
          const blocked = yield* Effect.forEach(producing, (fiber) => fiber.poll)
          expect(blocked.some(Option.isNone)).toBe(true)
          const refused = yield* Effect.flip(pool.trySubmit(0))
          expect(refused).toEqual(new QueueFull({ capacity }))
        }
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.joinAll(producing)
        yield* pool.awaitIdle
        expect(confirmed).toBe(total)
        expect(started).toBe(total)
        expect(maxWaiting).toBeLessThanOrEqual(capacity + workers)
        expect((yield* pool.stats).depth).toBe(0)
      }).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "1 second" }))),
    PropertyRuns.fastCheck(7)
  )

  it.effect.prop(
    "no fiber of the pool is alive after its Scope closes",
    { scenario: scenarioArbitrary({ maxDurationMs: 300, maxJobs: 20 }), closeAtMs: fc.integer({ min: 0, max: 300 }) },
    ({ closeAtMs, scenario }) =>
      Effect.gen(function*() {
        let workersSeen = 0
        // FiberLeaks closes the pool's Scope and fails with the fibers still alive after it, by name.
        const checked = yield* Effect.gen(function*() {
          const pool = yield* WorkerPool.make({
            capacity: scenario.capacity,
            workers: scenario.workers,
            onShutdown: scenario.policy,
            deadLetter: () => Effect.void,
            handBack: () => Effect.void,
            handler: (index: number) => Effect.sleep(Duration.millis(scenario.jobs[index]!.durationMs))
          })
          workersSeen = (yield* pool.stats).workers
          yield* Effect.forkScoped(Effect.forEach(scenario.jobs, (_, index) => pool.submit(index), { discard: true }))
          yield* TestClock.adjust(Duration.millis(closeAtMs))
        }).pipe(FiberLeaks.check, Effect.fork)
        // The drain that closing the Scope starts runs on the TestClock.
        yield* TestClock.adjust(Duration.millis(scenario.drainTimeoutMs + 10_000))
        yield* Fiber.join(checked)
        expect(workersSeen).toBe(scenario.workers)
      }).pipe(Effect.provide(Lifecycle.layer({ drainTimeout: Duration.millis(scenario.drainTimeoutMs) }))),
    PropertyRuns.fastCheck(42)
  )

  it.effect.prop(
    "the drain deadline is honoured in virtual time, and the report lists exactly what it cut",
    { scenario: scenarioArbitrary({ maxDurationMs: 1_000, maxJobs: 20 }) },
    ({ scenario }) =>
      Effect.gen(function*() {
        const run = yield* runScenario(scenario)
        // Work is cut at the deadline minus the grace kept for what it cuts (5 s, at most half the deadline).
        const cutAfterMs = scenario.drainTimeoutMs - Math.min(5_000, scenario.drainTimeoutMs / 2)
        const deadlineAt = scenario.shutdownAtMs + cutAfterMs
        expect(run.report.totalMs).toBeLessThanOrEqual(scenario.drainTimeoutMs)
        const cut: Array<string> = []
        for (const [id, [recorded]] of run.outcomes) {
          const { atMs, outcome } = recorded!
          expect(atMs, id).toBeLessThanOrEqual(deadlineAt)
          if (outcome._tag === "Unfinished" && outcome.unfinished.reason === "notStarted") {
            cut.push(id)
            expect(run.startedAtMs.has(id), id).toBe(false)
            expect(atMs, id).toBe(deadlineAt)
          }
          if (outcome._tag === "Unfinished" && outcome.unfinished.reason === "interrupted") {
            cut.push(id)
            // It could not have finished before the deadline (a tie at the very instant may go either way).
            const startedAt = run.startedAtMs.get(id)!
            expect(startedAt + scenario.jobs[Number(id.slice(4))]!.durationMs, id).toBeGreaterThanOrEqual(deadlineAt)
            expect(atMs, id).toBe(deadlineAt)
          }
        }
        expect(run.report.forced).toBe(cut.length)
        const poolReport = run.report.components.find((component) => component.component === "scenario")!
        expect(poolReport.forced).toBe(cut.length)
        expect(poolReport.unfinished).toEqual(run.report.unfinished)
        expect(run.report.outcome).toBe(cut.length > 0 ? "forced" : "clean")
        if (cut.length > 0) expect(run.report.totalMs).toBe(cutAfterMs)
        expect(Lifecycle.exitCode({ exit: Exit.void, report: Option.some(run.report) })).toBe(cut.length > 0 ? 1 : 0)
      }),
    PropertyRuns.fastCheck(2026)
  )

  it.effect("a producer interrupted at any suspension point: every job it was told was accepted ends exactly once", () =>
    Effect.gen(function*() {
      const report = yield* interruptEverywhere(
        Effect.gen(function*() {
          const ledger = yield* Ledger.make<string, string>()
          const pool = yield* WorkerPool.make({
            capacity: 1,
            workers: 1,
            handler: (_: string) => Effect.sleep(Duration.millis(10)),
            onOutcome: (outcome) => ledger.settle(jobIdOf(outcome), outcome._tag)
          })
          // `submit` returning is the pool's word that the job is accepted; the ledger hears it at once.
          const submit = (id: string) =>
            Effect.uninterruptibleMask((restore) => Effect.flatMap(restore(pool.submit(id, { id })), ledger.accept))
          const produce = Effect.forEach(["a", "b", "c", "d"], submit, { discard: true })
          return scenario(produce, () => Effect.zipRight(pool.awaitIdle, ledger.check))
        }).pipe(Effect.provide(Lifecycle.layer({ drainTimeout: "1 second" })))
      )
      // With one worker and room for one job, the producer waits to queue "c" and "d": both points were tried.
      expect(report.suspensionPoints).toBeGreaterThanOrEqual(2)
      expect(report.runs).toBe(report.suspensionPoints + 1)
    }))
})
