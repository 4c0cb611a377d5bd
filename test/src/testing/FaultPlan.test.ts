/**
 * FaultPlan: plans print as one line, shrink to the smallest scenario that still fails (fewer and calmer
 * calls, no signals), replay call by call on the TestClock, and send their signals when they say.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Effect, Exit, FastCheck as fc, Fiber, Option, TestClock } from "effect"
import { FaultInjection, FaultPlan, PropertyRuns } from "keel/testing"

class Busy extends Data.TaggedError("Busy")<{}> {}
class Refused extends Data.TaggedError("Refused")<{}> {}

const plan = (overrides: Partial<FaultPlan.FaultPlan>): FaultPlan.FaultPlan => ({
  calls: [],
  jobDurationsMs: [],
  sigtermAtMs: undefined,
  secondSignalAfterMs: undefined,
  ...overrides
})

describe("FaultPlan.describe", () => {
  it("names every eventful call, the jobs and the signals, in one line", () => {
    expect(FaultPlan.describe(plan({}))).toBe("nothing goes wrong")
    expect(FaultPlan.describe(plan({
      calls: [
        { _tag: "Ok", latencyMs: 0 },
        { _tag: "Fail", error: 1, latencyMs: 20 },
        { _tag: "Ok", latencyMs: 700 },
        { _tag: "Defect", latencyMs: 0 },
        { _tag: "Hang" }
      ],
      jobDurationsMs: [10, 300],
      sigtermAtMs: 250,
      secondSignalAfterMs: 40
    }))).toBe(
      "call 1 fails with error 1 after 20 ms; call 2 answers after 700 ms; call 3 dies; call 4 hangs; " +
        "jobs of 10, 300 ms; SIGTERM at 250 ms; a second SIGTERM 40 ms later"
    )
  })
})

describe("FaultPlan.arbitrary", () => {
  it("a failing property shrinks to the smallest plan that still fails, printed by describe", () => {
    // Fails whenever some call hangs: the minimal counterexample is a single hanging call, nothing else.
    const result = fc.check(
      fc.property(FaultPlan.arbitrary(), (generated) => !generated.calls.some((call) => call._tag === "Hang")),
      { seed: 20261122, numRuns: 200 }
    )
    expect(result.failed).toBe(true)
    const shrunk = result.counterexample![0]
    expect(shrunk.calls).toEqual([{ _tag: "Hang" }])
    expect(shrunk.jobDurationsMs).toEqual([])
    expect(shrunk.sigtermAtMs).toBeUndefined()
    expect(fc.stringify(shrunk)).toBe("call 0 hangs")
  })

  it("respects its options: no defects, no hangs, no signals, bounded calls, errors, latencies and jobs", () => {
    const arbitrary = FaultPlan.arbitrary({
      calls: { min: 2, max: 5 },
      errorKinds: 3,
      defects: false,
      hangs: false,
      maxLatencyMs: 50,
      jobs: { min: 1, max: 3, maxDurationMs: 100 },
      signals: false
    })
    for (const sample of fc.sample(arbitrary, { seed: 7, numRuns: 300 })) {
      expect(sample.calls.length).toBeGreaterThanOrEqual(2)
      expect(sample.calls.length).toBeLessThanOrEqual(5)
      for (const call of sample.calls) {
        expect(["Ok", "Fail"]).toContain(call._tag)
        if (call._tag !== "Hang") expect(call.latencyMs).toBeLessThanOrEqual(50)
        if (call._tag === "Fail") expect(call.error).toBeLessThan(3)
      }
      expect(sample.jobDurationsMs.length).toBeGreaterThanOrEqual(1)
      expect(sample.jobDurationsMs.length).toBeLessThanOrEqual(3)
      expect(Math.max(...sample.jobDurationsMs)).toBeLessThanOrEqual(100)
      expect(sample.sigtermAtMs).toBeUndefined()
      expect(sample.secondSignalAfterMs).toBeUndefined()
    }
  })

  it("plans signals within the latest instant asked for", () => {
    const samples = fc.sample(FaultPlan.arbitrary({ signals: { latestMs: 300 } }), { seed: 8, numRuns: 300 })
    const signalled = samples.filter((sample) => sample.sigtermAtMs !== undefined)
    expect(signalled.length).toBeGreaterThan(0)
    for (const sample of signalled) expect(sample.sigtermAtMs).toBeLessThanOrEqual(300)
  })
})

describe("FaultPlan.replay", () => {
  const echo = (request: number) => Effect.succeed(request)

  it.effect("gives each call its planned fate, in order, on the TestClock; calls past the plan go through", () =>
    Effect.gen(function*() {
      const planned = yield* FaultPlan.replay<Busy | Refused>(
        plan({
          calls: [
            { _tag: "Ok", latencyMs: 100 },
            { _tag: "Fail", error: 1, latencyMs: 0 },
            { _tag: "Defect", latencyMs: 0 },
            { _tag: "Hang" }
          ]
        }),
        { errors: [() => new Busy(), () => new Refused()] }
      )
      const service = planned(echo)

      const late = yield* Effect.fork(service(1))
      yield* TestClock.adjust("99 millis")
      expect(late.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(late)).toBe(1)

      expect(yield* Effect.flip(service(2))).toEqual(new Refused())
      const died = yield* Effect.exit(service(3))
      expect(Exit.isFailure(died) && died.cause._tag === "Die" && died.cause.defect instanceof FaultInjection.InjectedDefect)
        .toBe(true)
      const hung = yield* Effect.fork(service(4))
      yield* TestClock.adjust("1 hour")
      expect(hung.unsafePoll()).toBeNull()
      yield* Fiber.interrupt(hung)

      expect(yield* service(5)).toBe(5)
    }))

  it.effect("counts calls across every service it wraps", () =>
    Effect.gen(function*() {
      const planned = yield* FaultPlan.replay(plan({ calls: [{ _tag: "Ok", latencyMs: 0 }, { _tag: "Fail", error: 0, latencyMs: 0 }] }), {
        errors: [() => new Busy()]
      })
      const first = planned(echo)
      const second = planned((request: number) => Effect.succeed(request * 10))
      expect(yield* first(1)).toBe(1)
      expect(yield* Effect.flip(second(2))).toEqual(new Busy())
      expect(yield* second(3)).toBe(30)
    }))

  it.effect("a plan with failing calls and no errors to fail with is refused", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(FaultPlan.replay(plan({ calls: [{ _tag: "Fail", error: 0, latencyMs: 0 }] }), { errors: [] }))
      const defect = Exit.isFailure(exit) ? Cause.dieOption(exit.cause) : Option.none()
      expect(Option.map(defect, (error) => (error as Error).message)).toEqual(
        Option.some("FaultPlan.replay: the plan has failing calls but no errors to fail with")
      )
    }))

  it.effect.prop(
    "a replayed plan fails exactly the calls it plans to fail, with the planned errors",
    [FaultPlan.arbitrary({ calls: { max: 8 }, hangs: false, defects: false, errorKinds: 2, signals: false, maxLatencyMs: 20 })],
    ([generated]) =>
      Effect.gen(function*() {
        const planned = yield* FaultPlan.replay<Busy | Refused>(generated, { errors: [() => new Busy(), () => new Refused()] })
        const service = planned(echo)
        const results: Array<string> = []
        for (let index = 0; index < generated.calls.length; index++) {
          const call = Effect.either(service(index))
          const fiber = yield* Effect.fork(call)
          yield* TestClock.adjust("20 millis")
          const outcome = yield* Fiber.join(fiber)
          results.push(outcome._tag === "Right" ? "ok" : outcome.left._tag)
        }
        expect(results).toEqual(
          generated.calls.map((call) => call._tag === "Fail" ? (call.error === 0 ? "Busy" : "Refused") : "ok")
        )
      }),
    PropertyRuns.fastCheck(20261123)
  )
})

describe("FaultPlan.sendSignals", () => {
  it.effect("sends SIGTERM at its instant and the second signal after its gap", () =>
    Effect.gen(function*() {
      const received: Array<number> = []
      const signal = () => Effect.flatMap(TestClock.currentTimeMillis, (now) => Effect.sync(() => void received.push(now)))
      const sending = yield* Effect.fork(FaultPlan.sendSignals(plan({ sigtermAtMs: 250, secondSignalAfterMs: 40 }), signal))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(sending)
      expect(received).toEqual([250, 290])
      yield* FaultPlan.sendSignals(plan({}), signal)
      expect(received).toEqual([250, 290])
    }))
})
