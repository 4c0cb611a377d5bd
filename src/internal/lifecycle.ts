/**
 * What `Lifecycle.run` needs of a Lifecycle beyond the service components see: the tracker of in-flight
 * work, the drain reports, the end of the run, the drain's start. They are not part of `LifecycleService`
 * (components must not settle the tracker or mark the run stopped), so `make` keeps them beside the service
 * it returns, keyed by it, for `run` to find.
 */
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type { DrainReport, LifecycleService, Trigger } from "../Lifecycle.js"
import type * as Tracker from "../Tracker.js"

/** The parts of a Lifecycle only `run` uses. */
export interface Internals {
  /** Work the drain waits for (`track`), settled by `run` within the deadline. */
  readonly tracker: Tracker.Tracker
  /** What components reported of their drain, for the shutdown report. */
  readonly drainReports: Effect.Effect<ReadonlyArray<DrainReport>>
  /** When each drain report came (Clock millis), in the order of `drainReports`. */
  readonly drainReportTimes: Effect.Effect<ReadonlyArray<number>>
  /** Moves the phase to `stopped` when the run is over. */
  readonly markStopped: Effect.Effect<void>
  /** Clock time (ms) of the signal or `shutdown` that started the shutdown; none before. */
  readonly shutdownAt: Effect.Effect<Option.Option<number>>
  /** Clock time (ms) when draining started, after the pre-stop delay; none before. */
  readonly drainStartedAt: Effect.Effect<Option.Option<number>>
}

const internalsByService = new WeakMap<LifecycleService, Internals>()

/** Keeps `internals` beside the `service` that `make` returns. */
export const register = (service: LifecycleService, internals: Internals): LifecycleService => {
  internalsByService.set(service, internals)
  return service
}

/** The internals of a Lifecycle made by `make`; a defect for a service made some other way. */
export const internalsOf = (service: LifecycleService): Effect.Effect<Internals> =>
  Effect.suspend(() => {
    const found = internalsByService.get(service)
    return found === undefined
      ? Effect.dieMessage("Lifecycle.run needs the Lifecycle that Lifecycle.make or Lifecycle.layer provides")
      : Effect.succeed(found)
  })

/** A trigger in words, for reasons and logs: the signal's name, or `shutdown requested: <reason>`. */
export const describeTrigger = (trigger: Trigger): string =>
  trigger._tag === "Signal" ? trigger.signal : `shutdown requested: ${trigger.reason}`
