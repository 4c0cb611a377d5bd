/**
 * FaultPlan — whole failure scenarios as fast-check arbitraries: which calls fail and how, how long jobs
 * take, when SIGTERM arrives and whether a second signal follows.
 *
 * A rate-based injector (FaultInjection) finds that something goes wrong; a plan says exactly what went
 * wrong, and fast-check shrinks it: calls shrink towards `ok` and the list towards fewer calls, durations
 * towards 0, signals towards none, so a failing property ends on the smallest scenario that still fails.
 * A plan prints as a short description (`call 3 fails with error 1; SIGTERM at 250 ms`) rather than a
 * nested object, and `replay` turns it into the faults of a service and the signals of a Lifecycle, on the
 * Clock, so the same plan replays the same run on TestClock.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as fc from "effect/FastCheck"
import type { Middleware, Service } from "../middleware/Middleware.js"
import { InjectedDefect } from "./FaultInjection.js"

/** What happens to one call, in the order calls arrive. */
export type CallFault =
  | {
    /** The call reaches the service and answers as it does. */
    readonly _tag: "Ok"
    /** Delay before the call reaches the service, in milliseconds; 0 for none. */
    readonly latencyMs: number
  }
  | {
    /** The call fails with a typed error instead of reaching the service. */
    readonly _tag: "Fail"
    /** Which of `ReplayOptions.errors` to fail with: an index, taken modulo their number. */
    readonly error: number
    /** Delay before the call fails, in milliseconds; 0 for none. */
    readonly latencyMs: number
  }
  | {
    /** The call dies with `InjectedDefect` instead of reaching the service. */
    readonly _tag: "Defect"
    /** Delay before the call dies, in milliseconds; 0 for none. */
    readonly latencyMs: number
  }
  | {
    /** The call never completes (until it is interrupted) and never reaches the service. */
    readonly _tag: "Hang"
  }

/**
 * One whole failure scenario, as `arbitrary` generates it: the fate of each call, the jobs to run and the
 * signals to send. `replay` plays its calls, `sendSignals` its signals; the jobs are for the test to submit.
 * Generated plans print as `describe` reads.
 */
export interface FaultPlan {
  /** The fate of the n-th call (from 0); calls past the end succeed at once. */
  readonly calls: ReadonlyArray<CallFault>
  /** How long each job of the scenario takes, in milliseconds. */
  readonly jobDurationsMs: ReadonlyArray<number>
  /** When the first SIGTERM arrives, in milliseconds from the start; undefined: never. */
  readonly sigtermAtMs: number | undefined
  /** How long after the first SIGTERM a second one arrives, in milliseconds; undefined: never. Unused without one. */
  readonly secondSignalAfterMs: number | undefined
}

/** What `arbitrary` may generate; every field is optional. */
export interface PlanOptions {
  /** Calls planned. Default 0 to 20. */
  readonly calls?: {
    /** Fewest calls planned. Default 0. */
    readonly min?: number
    /** Most calls planned. Default 20. */
    readonly max?: number
  }
  /** Number of typed errors a call may fail with (the `error` index is below it). Default 1. */
  readonly errorKinds?: number
  /** Whether calls may be planned to die (`Defect`). Default true. */
  readonly defects?: boolean
  /** Whether calls may be planned to hang (`Hang`). Default true. */
  readonly hangs?: boolean
  /** Longest latency planned for a call. Default 1000 ms. */
  readonly maxLatencyMs?: number
  /** Jobs planned and their longest duration. Default 0 to 10 jobs of at most 2000 ms. */
  readonly jobs?: {
    /** Fewest jobs planned. Default 0. */
    readonly min?: number
    /** Most jobs planned. Default 10. */
    readonly max?: number
    /** Longest duration of a job, in milliseconds. Default 2000. */
    readonly maxDurationMs?: number
  }
  /**
   * Whether signals are planned (`false`: never), and the latest instant of the first. Default: yes, within
   * 5000 ms. Either signal may be left out; the second follows the first by at most the same `latestMs`.
   */
  readonly signals?: boolean | {
    /** Latest instant of the first SIGTERM, and longest wait for the second, in milliseconds. */
    readonly latestMs: number
  }
}

const describeCall = (fault: CallFault, index: number): string | undefined => {
  const late = (latencyMs: number) => (latencyMs > 0 ? ` after ${latencyMs} ms` : "")
  switch (fault._tag) {
    case "Ok":
      return fault.latencyMs > 0 ? `call ${index} answers${late(fault.latencyMs)}` : undefined
    case "Fail":
      return `call ${index} fails with error ${fault.error}${late(fault.latencyMs)}`
    case "Defect":
      return `call ${index} dies${late(fault.latencyMs)}`
    case "Hang":
      return `call ${index} hangs`
  }
}

/** A plan in a line: its faults, its jobs and its signals (what is not listed is uneventful). */
export const describe = (plan: FaultPlan): string => {
  const parts = plan.calls.flatMap((fault, index) => describeCall(fault, index) ?? [])
  if (plan.jobDurationsMs.length > 0) parts.push(`jobs of ${plan.jobDurationsMs.join(", ")} ms`)
  if (plan.sigtermAtMs !== undefined) {
    parts.push(`SIGTERM at ${plan.sigtermAtMs} ms`)
    if (plan.secondSignalAfterMs !== undefined) parts.push(`a second SIGTERM ${plan.secondSignalAfterMs} ms later`)
  }
  return parts.length === 0 ? "nothing goes wrong" : parts.join("; ")
}

/** The plan with fast-check's printing hook, so counterexamples read as `describe` says. */
const printable = (plan: FaultPlan): FaultPlan =>
  Object.defineProperty({ ...plan }, fc.toStringMethod, { value: () => describe(plan), enumerable: false })

/**
 * Scenarios as an arbitrary; shrinking makes them smaller and calmer. A planned `Fail` names one of
 * `errorKinds` errors; call fates are weighted so most calls succeed.
 *
 * @example
 * ```ts
 * import { Data, Effect, FastCheck as fc, TestContext } from "effect"
 * import { FaultPlan, VirtualTime } from "keel/testing"
 *
 * class Unavailable extends Data.TaggedError("Unavailable")<{}> {}
 *
 * const property = fc.asyncProperty(FaultPlan.arbitrary({ calls: { max: 5 }, hangs: false }), (plan) =>
 *   Effect.gen(function*() {
 *     const faults = yield* FaultPlan.replay(plan, { errors: [() => new Unavailable()] })
 *     const lookup = faults((id: string) => Effect.succeed(id))
 *     for (const id of ["a", "b", "c"]) yield* Effect.exit(lookup(id)) // ok, failed or died
 *   }).pipe(VirtualTime.run, Effect.provide(TestContext.TestContext), Effect.runPromise))
 * ```
 */
export const arbitrary = (options: PlanOptions = {}): fc.Arbitrary<FaultPlan> => {
  const maxLatencyMs = options.maxLatencyMs ?? 1000
  const latencyMs = fc.integer({ min: 0, max: maxLatencyMs })
  const errorKinds = Math.max(1, options.errorKinds ?? 1)
  // `Ok` first: fast-check shrinks a oneof towards its first alternative.
  const call: fc.Arbitrary<CallFault> = fc.oneof(
    { arbitrary: fc.record({ _tag: fc.constant("Ok" as const), latencyMs }), weight: 4 },
    {
      arbitrary: fc.record({ _tag: fc.constant("Fail" as const), error: fc.integer({ min: 0, max: errorKinds - 1 }), latencyMs }),
      weight: 2
    },
    ...(options.defects === false ? [] : [{ arbitrary: fc.record({ _tag: fc.constant("Defect" as const), latencyMs }), weight: 1 }]),
    ...(options.hangs === false ? [] : [{ arbitrary: fc.record({ _tag: fc.constant("Hang" as const) }), weight: 1 }])
  )
  const jobs = options.jobs ?? {}
  const signals = options.signals ?? true
  const latestSignalMs = typeof signals === "object" ? signals.latestMs : 5000
  const noSignal = fc.constant(undefined)
  const signalAt = signals === false ? noSignal : fc.option(fc.integer({ min: 0, max: latestSignalMs }), { nil: undefined })
  return fc.record({
    calls: fc.array(call, { minLength: options.calls?.min ?? 0, maxLength: options.calls?.max ?? 20 }),
    jobDurationsMs: fc.array(fc.integer({ min: 0, max: jobs.maxDurationMs ?? 2000 }), {
      minLength: jobs.min ?? 0,
      maxLength: jobs.max ?? 10
    }),
    sigtermAtMs: signalAt,
    secondSignalAfterMs: signalAt
  }).map(printable)
}

/**
 * Sends the plan's signals to `signal` (a Lifecycle's `signal`), on the Clock; run it forked. Completes after
 * the last signal, at once when the plan has none.
 */
export const sendSignals = (
  plan: FaultPlan,
  signal: (name: "SIGTERM") => Effect.Effect<void>
): Effect.Effect<void> => {
  if (plan.sigtermAtMs === undefined) return Effect.void
  const first = Effect.zipRight(Effect.sleep(Duration.millis(plan.sigtermAtMs)), signal("SIGTERM"))
  if (plan.secondSignalAfterMs === undefined) return first
  return Effect.zipRight(first, Effect.zipRight(Effect.sleep(Duration.millis(plan.secondSignalAfterMs)), signal("SIGTERM")))
}

/** Options of `replay`. */
export interface ReplayOptions<E> {
  /** The typed errors a `Fail` call picks from, by its `error` index (modulo their number). */
  readonly errors: ReadonlyArray<() => E>
}

/**
 * A middleware that gives the n-th call through it (counted across every service it wraps, in the order
 * calls start) the fate `plan.calls[n]`: it answers after its latency, fails with the planned error after
 * its latency, dies with `InjectedDefect`, or hangs; calls past the plan go straight through. Delays are
 * `Effect.sleep`, so TestClock (or `VirtualTime.run`) drives them.
 */
export const replay = <E>(plan: FaultPlan, options: ReplayOptions<E>): Effect.Effect<Middleware<E>> =>
  Effect.suspend(() => {
    if (options.errors.length === 0 && plan.calls.some((fault) => fault._tag === "Fail")) {
      return Effect.dieMessage("FaultPlan.replay: the plan has failing calls but no errors to fail with")
    }
    let next = 0
    const after = <A, E2, R>(latencyMs: number, effect: Effect.Effect<A, E2, R>) =>
      latencyMs > 0 ? Effect.zipRight(Effect.sleep(Duration.millis(latencyMs)), effect) : effect
    const middleware = <Req, Res, E2, R>(service: Service<Req, Res, E2, R>): Service<Req, Res, E | E2, R> => (request) =>
      Effect.suspend((): Effect.Effect<Res, E | E2, R> => {
        const fault = plan.calls[next++]
        if (fault === undefined) return service(request)
        switch (fault._tag) {
          case "Ok":
            return after(fault.latencyMs, service(request))
          case "Fail":
            return after(fault.latencyMs, Effect.fail(options.errors[fault.error % options.errors.length]!()))
          case "Defect":
            return after(fault.latencyMs, Effect.die(new InjectedDefect({ message: `planned defect (call ${next - 1})` })))
          case "Hang":
            return Effect.never
        }
      })
    return Effect.succeed<Middleware<E>>(middleware)
  })
