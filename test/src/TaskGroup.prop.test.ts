/**
 * Properties of TaskGroup under random task lists (duration, outcome), random concurrency limits and
 * deadlines, in both modes — all in virtual time, with fixed seeds. Each task writes down when it started,
 * ended on its own, or was interrupted, so the properties compare what the group reports with what
 * actually happened.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Data, Effect, FastCheck as fc, Fiber, Option, Supervisor, TestClock } from "effect"
import * as TaskGroup from "../../src/TaskGroup.js"
import { PropertyRuns } from "keel/testing"

class Boom extends Data.TaggedError("Boom")<{ readonly task: string }> {}

interface Script {
  readonly durationMs: number
  readonly outcome: "ok" | "fail" | "die"
}

interface Trace {
  startedAt?: number
  endedAt?: number
  interruptedAt?: number
}

const scriptArbitrary = (outcomes: ReadonlyArray<Script["outcome"]>): fc.Arbitrary<Script> =>
  fc.record({ durationMs: fc.integer({ min: 1, max: 100 }), outcome: fc.constantFrom(...outcomes) })

const scriptsArbitrary = (outcomes: ReadonlyArray<Script["outcome"]>) =>
  fc.array(scriptArbitrary(outcomes), { minLength: 1, maxLength: 12 })

const concurrencyArbitrary = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined })


/** Joins a fiber that must have ended by now, so a broken group fails the test instead of hanging it. */
const joinEnded = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.flatMap(Fiber.poll(fiber), (polled) => {
    expect(Option.isSome(polled), "the fiber should have ended by now").toBe(true)
    return Fiber.join(fiber)
  })

const labelOf = (index: number) => `t${index}`
const defectOf = (label: string) => `${label} panicked`

/**
 * Spawns one task per script into a fresh group and hands back the group, the traces, the highest number
 * of tasks seen running at once, and the supervisor that tracks the task fibers.
 */
const spawnAll = (scripts: ReadonlyArray<Script>, mode: TaskGroup.Mode, concurrency: number | undefined) =>
  Effect.gen(function*() {
    const supervisor = yield* Supervisor.track
    const group = yield* TaskGroup.make<number, Boom>(concurrency === undefined ? { mode } : { mode, concurrency })
    const traces: Array<Trace> = scripts.map(() => ({}))
    const load = { running: 0, maxRunning: 0 }
    const task = (script: Script, index: number) => {
      const trace = traces[index]!
      const label = labelOf(index)
      const finish = script.outcome === "ok"
        ? Effect.succeed(index)
        : script.outcome === "fail"
        ? Effect.fail(new Boom({ task: label }))
        : Effect.die(defectOf(label))
      return Effect.gen(function*() {
        trace.startedAt = yield* Clock.currentTimeMillis
        load.maxRunning = Math.max(load.maxRunning, ++load.running)
        yield* Effect.sleep(script.durationMs)
        trace.endedAt = yield* Clock.currentTimeMillis
        return yield* finish
      }).pipe(
        Effect.onInterrupt(() => Effect.map(Clock.currentTimeMillis, (now) => void (trace.interruptedAt = now))),
        Effect.ensuring(Effect.sync(() => load.running--))
      )
    }
    yield* Effect.forEach(scripts, (script, index) =>
      group.spawn(labelOf(index), task(script, index)).pipe(Effect.supervised(supervisor)))
    return { group, traces, load, supervisor }
  })

const totalDuration = (scripts: ReadonlyArray<Script>) => scripts.reduce((sum, script) => sum + script.durationMs, 0)

const labelsOf = (results: TaskGroup.Results<number, Boom>) => [
  ...results.succeeded.map((result) => result.label),
  ...results.failed.map((result) => result.label),
  ...results.panicked.map((result) => result.label),
  ...results.interrupted.map((result) => result.label)
]

const expectEveryTaskExactlyOnce = (results: TaskGroup.Results<number, Boom>, count: number) =>
  expect(labelsOf(results).sort()).toEqual(Array.from({ length: count }, (_, index) => labelOf(index)).sort())

/** What a task that ran to its end reported, as join would list it. */
const expectedResult = (scripts: ReadonlyArray<Script>, indices: ReadonlyArray<number>) => ({
  succeeded: indices.filter((index) => scripts[index]!.outcome === "ok").map((index) => ({
    label: labelOf(index),
    value: index
  })),
  failed: indices.filter((index) => scripts[index]!.outcome === "fail").map((index) => ({
    label: labelOf(index),
    error: new Boom({ task: labelOf(index) })
  })),
  panicked: indices.filter((index) => scripts[index]!.outcome === "die").map((index) => ({
    label: labelOf(index),
    defect: defectOf(labelOf(index))
  }))
})

describe("TaskGroup properties", () => {
  it.effect.prop(
    "collect: join accounts for every task exactly once, as scripted, and leaves nothing running",
    { scripts: scriptsArbitrary(["ok", "ok", "fail", "die"]), concurrency: concurrencyArbitrary },
    ({ concurrency, scripts }) =>
      Effect.scoped(Effect.gen(function*() {
        const { group, load, supervisor, traces } = yield* spawnAll(scripts, "collect", concurrency)
        const joining = yield* Effect.fork(group.join)
        yield* TestClock.adjust(totalDuration(scripts))
        const results = yield* joinEnded(joining)
        expect(yield* supervisor.value).toEqual([])
        expectEveryTaskExactlyOnce(results, scripts.length)
        const all = scripts.map((_, index) => index)
        expect(results).toEqual({ ...expectedResult(scripts, all), interrupted: [] })
        for (const trace of traces) expect(trace.endedAt).toBeDefined()
        expect(load.maxRunning).toBeLessThanOrEqual(concurrency ?? scripts.length)
      })),
    PropertyRuns.fastCheck(20261201)
  )

  it.effect.prop(
    "failFast: the first failure or defect cuts every sibling at that instant, and no task starts after it",
    { scripts: scriptsArbitrary(["ok", "ok", "fail", "die"]), concurrency: concurrencyArbitrary },
    ({ concurrency, scripts }) =>
      Effect.scoped(Effect.gen(function*() {
        const { group, load, supervisor, traces } = yield* spawnAll(scripts, "failFast", concurrency)
        const joining = yield* Effect.fork(group.join)
        yield* TestClock.adjust(totalDuration(scripts))
        const results = yield* joinEnded(joining)
        expect(yield* supervisor.value).toEqual([])
        expectEveryTaskExactlyOnce(results, scripts.length)
        expect(load.maxRunning).toBeLessThanOrEqual(concurrency ?? scripts.length)

        const indexOf = (label: string) => Number(label.slice(1))
        const interrupted = results.interrupted.map((result) => indexOf(result.label))
        const ranToEnd = scripts.map((_, index) => index).filter((index) => !interrupted.includes(index))
        // The tasks that were not cut report exactly what they were scripted to.
        expect({ ...results, interrupted: [] }).toEqual({ ...expectedResult(scripts, ranToEnd), interrupted: [] })
        const culprits = [...results.failed, ...results.panicked].map((result) => indexOf(result.label))
        if (culprits.length === 0) {
          expect(interrupted).toEqual([])
          expect(scripts.every((script) => script.outcome === "ok")).toBe(true)
          return
        }
        const firstFailureAt = Math.min(...culprits.map((index) => traces[index]!.endedAt!))
        for (const index of ranToEnd) expect(traces[index]!.endedAt).toBeLessThanOrEqual(firstFailureAt)
        for (const result of results.interrupted) {
          const index = indexOf(result.label)
          const trace = traces[index]!
          expect(trace.endedAt).toBeUndefined()
          expect(result.started).toBe(trace.startedAt !== undefined)
          if (trace.startedAt === undefined) continue
          // Cut at the first failure, not later, and only if it had not finished by then.
          expect(trace.interruptedAt).toBe(firstFailureAt)
          expect(trace.startedAt + scripts[index]!.durationMs).toBeGreaterThanOrEqual(firstFailureAt)
        }
        for (const trace of traces) {
          if (trace.startedAt !== undefined) expect(trace.startedAt).toBeLessThanOrEqual(firstFailureAt)
        }
      })),
    PropertyRuns.fastCheck(20261202)
  )

  it.effect.prop(
    "never more than `concurrency` tasks run at once, and the limit is used",
    { scripts: scriptsArbitrary(["ok"]), concurrency: fc.integer({ min: 1, max: 4 }) },
    ({ concurrency, scripts }) =>
      Effect.scoped(Effect.gen(function*() {
        const { group, load } = yield* spawnAll(scripts, "collect", concurrency)
        const joining = yield* Effect.fork(group.join)
        yield* TestClock.adjust(totalDuration(scripts))
        expect((yield* joinEnded(joining)).succeeded.length).toBe(scripts.length)
        expect(load.maxRunning).toBe(Math.min(concurrency, scripts.length))
      })),
    PropertyRuns.fastCheck(20261203)
  )

  it.effect.prop(
    "waitFor(deadline): what ends by the deadline is finished, the rest is interrupted at the deadline and listed",
    {
      scripts: scriptsArbitrary(["ok", "ok", "fail", "die"]),
      concurrency: concurrencyArbitrary,
      deadlineMs: fc.integer({ min: 1, max: 150 })
    },
    ({ concurrency, deadlineMs, scripts }) =>
      Effect.scoped(Effect.gen(function*() {
        const { group, supervisor, traces } = yield* spawnAll(scripts, "collect", concurrency)
        yield* group.close()
        const settling = yield* Effect.fork(group.waitFor(deadlineMs))
        yield* TestClock.adjust(deadlineMs)
        const report = yield* joinEnded(settling)
        expect(yield* supervisor.value).toEqual([])

        const listed = report.interrupted.map((label) => Number(label.slice(1))).sort((left, right) => left - right)
        const unfinished = traces.flatMap((trace, index) => trace.endedAt === undefined ? [index] : [])
        expect(listed).toEqual(unfinished)
        expect(report.finished).toBe(scripts.length - listed.length)
        for (const trace of traces) {
          if (trace.endedAt !== undefined) expect(trace.endedAt).toBeLessThanOrEqual(deadlineMs)
          if (trace.interruptedAt !== undefined) expect(trace.interruptedAt).toBe(deadlineMs)
        }
        if (concurrency === undefined) {
          // Everything starts at once: a task shorter than the deadline finishes, a longer one is cut.
          scripts.forEach((script, index) => {
            if (script.durationMs < deadlineMs) expect(listed).not.toContain(index)
            if (script.durationMs > deadlineMs) expect(listed).toContain(index)
          })
        }
        const results = yield* group.join
        expect(results.interrupted.map((result) => result.label)).toEqual(report.interrupted)
      })),
    PropertyRuns.fastCheck(20261204)
  )
})
