/**
 * The shutdown path as a property, on scenarios from the testing kit: tracked jobs of planned durations, a
 * SIGTERM at a planned instant (or none) and maybe a second one. Whatever the plan, every job that started
 * ends exactly once (completed, or interrupted when the drain is cut), the program ends by itself when every
 * job is done before the signal, the report's outcome and the exit code are those the timeline implies, and
 * the drain never outlives its deadline (the grace for what it cuts comes out of it). Events at the same instant may come in either order, so
 * such plans are checked for the ledger only. Virtual time, fixed seed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option } from "effect"
import { Lifecycle } from "keel"
import { FaultPlan, Ledger, PropertyRuns, VirtualTime } from "keel/testing"

const drainTimeoutMs = 1000
/** The end of the drain deadline kept for what it cuts: work is cut at `drainTimeoutMs - forceGraceMs`. */
const forceGraceMs = 200

type JobOutcome = "completed" | "interrupted"

/** What the timeline implies: how the drain ends and when tracked work is cut, or undefined at a tie. */
const expectedEnd = (plan: FaultPlan.FaultPlan) => {
  const signalAt = plan.sigtermAtMs!
  const inFlightEnd = Math.max(signalAt, ...plan.jobDurationsMs)
  const deadline = signalAt + drainTimeoutMs - forceGraceMs
  const secondAt = plan.secondSignalAfterMs === undefined ? undefined : signalAt + plan.secondSignalAfterMs
  const instants = [inFlightEnd, deadline, ...(secondAt === undefined ? [] : [secondAt])]
  // Two events at the same instant may be seen in either order: no verdict then.
  if (new Set(instants).size < instants.length) return undefined
  if (secondAt !== undefined && secondAt < Math.min(inFlightEnd, deadline)) {
    return { outcome: "escalated" as const, cutAt: secondAt, exitCode: 143 }
  }
  if (inFlightEnd > deadline) return { outcome: "forced" as const, cutAt: deadline, exitCode: 1 }
  return { outcome: "clean" as const, cutAt: Number.POSITIVE_INFINITY, exitCode: 0 }
}

describe("Lifecycle properties", () => {
  it.effect.prop(
    "every started job ends exactly once; the outcome and exit code follow the timeline of signals and deadline",
    [
      FaultPlan.arbitrary({
        calls: { max: 0 },
        jobs: { min: 1, max: 6, maxDurationMs: 2500 },
        signals: { latestMs: 1500 }
      })
    ],
    ([plan]) =>
      Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        const ledger = yield* Ledger.make<string, JobOutcome>()
        const job = (durationMs: number, index: number) => {
          const id = `job-${index}`
          const work = Effect.zipRight(ledger.accept(id), Effect.sleep(durationMs))
          return Lifecycle.track(
            id,
            Effect.onExit(work, (exit) => ledger.settle(id, Exit.isSuccess(exit) ? "completed" : "interrupted"))
          )
        }
        // The program starts every job, then waits for them: with no signal it ends by itself.
        const program = Effect.forEach(plan.jobDurationsMs, job, { concurrency: "unbounded", discard: true })
        const run = Effect.zipRight(Effect.forkDaemon(FaultPlan.sendSignals(plan, lifecycle.signal)), Lifecycle.run(program))
        const result = yield* VirtualTime.run(run)

        const outcomes = yield* ledger.outcomes
        yield* ledger.check
        // A SIGTERM at 0 ms may close intake before the jobs start (they are refused): only later ones count.
        if (plan.sigtermAtMs === 0) return
        expect(outcomes.size).toBe(plan.jobDurationsMs.length)
        const programEnd = Math.max(...plan.jobDurationsMs)
        if (plan.sigtermAtMs === programEnd) return // which comes first is not defined
        if (plan.sigtermAtMs === undefined || plan.sigtermAtMs > programEnd) {
          // The program ended by itself before any signal.
          expect(result.report).toEqual(Option.none())
          expect(Exit.isSuccess(result.exit)).toBe(true)
          expect(Lifecycle.exitCode(result)).toBe(0)
          expect([...outcomes.values()].flat().every((outcome) => outcome === "completed")).toBe(true)
          return
        }
        const expected = expectedEnd(plan)
        if (expected === undefined || plan.jobDurationsMs.some((ms) => ms === expected.cutAt)) return
        const report = Option.getOrThrow(result.report)
        expect(report.outcome).toBe(expected.outcome)
        expect(Lifecycle.exitCode(result)).toBe(expected.exitCode)
        expect(report.totalMs).toBeLessThanOrEqual(drainTimeoutMs) // the grace comes out of the deadline
        plan.jobDurationsMs.forEach((ms, index) => {
          expect(outcomes.get(`job-${index}`), `job-${index} (${ms} ms)`).toEqual([
            ms < expected.cutAt ? "completed" : "interrupted"
          ])
        })
      }).pipe(Effect.provide(Lifecycle.layer({ drainTimeout: drainTimeoutMs, forceGrace: forceGraceMs }))),
    PropertyRuns.fastCheck(20261124)
  )
})

