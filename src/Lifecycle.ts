/**
 * Lifecycle — one shutdown path for the whole service, with one deadline.
 *
 * Tokio services broadcast shutdown on a `watch` channel and every task `select!`s on it; each task then
 * invents its own exit rule and the main task guesses how long to wait. Here the phase is a single
 * observable value (`running → draining → stopped`): a signal or `shutdown(reason)` moves it to
 * `draining`, which closes intake everywhere at once (readiness false, new work fails with
 * `ShuttingDown`) and starts ONE drain deadline. `run` then walks the phases in order — pre-stop delay,
 * tracked in-flight work, then interruption of the program so its Scopes and Layer finalizers run in
 * reverse dependency order (pools drain there) — each phase bounded by what is left of that same deadline.
 * At the deadline, or on a second signal, `awaitForced` completes: components interrupt what is left and
 * list it. Everything that was cut is named in the shutdown report, which is logged and returned.
 *
 * Time comes from `Clock` and sleeping from `Effect.sleep`, so TestClock drives every phase in tests.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as ConfigError from "effect/ConfigError"
import type * as Scope from "effect/Scope"
import { ShuttingDown } from "./Errors.js"
import * as Leftovers from "./Leftovers.js"
import { traceShutdown } from "./internal/shutdownTrace.js"
import * as Internal from "./internal/lifecycle.js"
import * as Tracker from "./Tracker.js"

/**
 * Where the service is: `running` (ready, work accepted); `preStop` (a signal or `shutdown` came: readiness
 * is false so that load balancers stop routing here, but everything else works as before for
 * `preStopDelay`); `draining` (intake closed, the drain under way); or `stopped` (set by `run` once the
 * program has ended, drained or not).
 */
export type Phase = "running" | "preStop" | "draining" | "stopped"

/** The process signals the Lifecycle reacts to: SIGINT (Ctrl+C) and SIGTERM (what orchestrators send). */
export type SignalName = "SIGINT" | "SIGTERM"

/** What started the shutdown. */
export type Trigger =
  | {
    /** Draining was started by a process signal. */
    readonly _tag: "Signal"
    /** The signal received. */
    readonly signal: SignalName
  }
  | {
    /** Draining was started by `shutdown(reason)`. */
    readonly _tag: "Requested"
    /** The reason given to `shutdown`. */
    readonly reason: string
  }

/** Why waiting stopped before the work was done. */
export type ForceReason =
  | {
    /**
     * The drain reached the point where what is left is cut: `drainTimeout` minus the grace kept for
     * interrupted work and finalizers.
     */
    readonly _tag: "Deadline"
    /** When the work was cut, counted from the start of draining. */
    readonly after: Duration.Duration
  }
  | {
    /** A further signal came during the drain (one during the pre-stop delay only skips the delay). */
    readonly _tag: "Escalated"
    /** The signal that escalated: the second one received, whichever it was. */
    readonly signal: SignalName
  }

/** What one component (a pool, the tracked work) did during the drain. */
export interface DrainReport {
  /** Who reports: a pool's or server's name (e.g. `http`), or `tracked` for the work run through `track`. */
  readonly component: string
  /** How long the component took to drain, in milliseconds. */
  readonly durationMs: number
  /** Items that finished on their own after the drain started. */
  readonly finished: number
  /** Items the deadline (or a second signal) cut: interrupted while running, or left unstarted. */
  readonly forced: number
  /** Every item that did not finish (interrupted, or queued and handed back), by id or label. */
  readonly unfinished: ReadonlyArray<string>
}

/** How long one phase of the drain took. */
export interface PhaseTiming {
  /**
   * `preStop`: the wait after readiness turned false (only when `preStopDelay` is above zero); `inFlight`:
   * waiting for the work run through `track`; `finalizers`: interrupting the program and running its Scopes'
   * and Layers' finalizers (pools and servers drain here).
   */
  readonly phase: "preStop" | "inFlight" | "finalizers"
  /** The phase's duration in milliseconds, read from `Clock`. */
  readonly durationMs: number
}

/**
 * What a drain did, built by `run` once the program has stopped; `run` logs it (as `renderReport` writes it)
 * and returns it in `RunResult.report`.
 */
export interface ShutdownReport {
  /** What started the drain. */
  readonly trigger: Trigger
  /** `clean`: everything finished in time; `forced`: the deadline cut work; `escalated`: a second signal did. */
  readonly outcome: "clean" | "forced" | "escalated"
  /**
   * Why waiting was cut: a second signal always; the deadline only when it cut work or finalizers were
   * abandoned. None after a clean drain.
   */
  readonly forcedBy: Option.Option<ForceReason>
  /** The drain deadline that applied (`drainTimeout`), in milliseconds. */
  readonly drainTimeoutMs: number
  /** The pre-stop delay that applied (`preStopDelay`), in milliseconds. */
  readonly preStopDelayMs: number
  /**
   * From the signal (or `shutdown`) to the end of the drain, in milliseconds: at most `preStopDelayMs +
   * drainTimeoutMs`, whatever the work and the finalizers do.
   */
  readonly totalMs: number
  /** The phases that ran, in order, each with its duration. */
  readonly phases: ReadonlyArray<PhaseTiming>
  /** What each component reported through `reportDrain`, in the order they reported. */
  readonly components: ReadonlyArray<DrainReport>
  /** Items that finished after the drain started, summed over `components`. */
  readonly finished: number
  /** Items the deadline or a second signal cut, summed over `components`. */
  readonly forced: number
  /** Every item that did not finish, from all `components`, by id or label. */
  readonly unfinished: ReadonlyArray<string>
  /** True when finalizers were still running at the end of the drain deadline and were abandoned. */
  readonly finalizersAbandoned: boolean
  /**
   * When the drain was cut: the fibers still alive and the resources still held at the end ("why won't it
   * exit?").
   */
  readonly leftovers: Option.Option<Leftovers.Leftovers>
}

/**
 * Options of `make` and `layer` (and of `runMain` in `keel/node`). From the signal to the end of the run takes
 * at most `preStopDelay + drainTimeout`: give an orchestrator a grace period (Kubernetes'
 * `terminationGracePeriodSeconds`) of at least that, plus a few seconds for the process to exit.
 */
export interface Options {
  /**
   * The one deadline for the whole drain, from the end of the pre-stop delay: in-flight work, queues and
   * finalizers, and the grace given to what the deadline cuts. Default: `KEEL_DRAIN_TIMEOUT`, else 20 seconds.
   */
  readonly drainTimeout?: Duration.DurationInput
  /**
   * How long, after a signal, readiness is false while everything else keeps working, before intake closes
   * and the drain starts: the time load balancers take to stop routing here. Default: `KEEL_PRE_STOP_DELAY`,
   * else 0. A second signal skips what is left of it.
   */
  readonly preStopDelay?: Duration.DurationInput
  /**
   * The part of `drainTimeout` kept at its end for interrupted work and finalizers: what is left running is
   * cut at `drainTimeout - forceGrace`. Default 5 seconds; at most half of `drainTimeout` is used.
   */
  readonly forceGrace?: Duration.DurationInput
}

/**
 * The Lifecycle: the phase, the intake check, the one drain deadline, and the signals and requests that
 * start it. Components read it to close intake and bound their drain; `run` walks the drain phases.
 */
export interface LifecycleService {
  /** The one deadline for the whole drain: the `drainTimeout` option, else `KEEL_DRAIN_TIMEOUT`, else 20 s. */
  readonly drainTimeout: Duration.Duration
  /**
   * How long readiness is false, with everything else still working, before intake closes and the drain
   * starts: the `preStopDelay` option, else `KEEL_PRE_STOP_DELAY`, else 0.
   */
  readonly preStopDelay: Duration.Duration
  /**
   * The end of `drainTimeout` kept for interrupted work and finalizers once the work has been cut (the
   * `forceGrace` option, at most half of `drainTimeout`).
   */
  readonly forceGrace: Duration.Duration
  /** The current phase. */
  readonly phase: Effect.Effect<Phase>
  /** The current phase, then every change. */
  readonly phaseChanges: Stream.Stream<Phase>
  /** True while running; false from the signal (or `shutdown`) on, through the pre-stop delay. */
  readonly isReady: Effect.Effect<boolean>
  /**
   * Completes with the trigger at the signal (or `shutdown`): readiness turns false and the pre-stop delay
   * begins (at once if it already has).
   */
  readonly awaitShutdown: Effect.Effect<Trigger>
  /**
   * Completes with the trigger when draining starts, after the pre-stop delay: intake closes (at once if it
   * already has).
   */
  readonly awaitDraining: Effect.Effect<Trigger>
  /** The trigger, if draining has started, without waiting. */
  readonly pollDraining: Effect.Effect<Option.Option<Trigger>>
  /**
   * Completes when waiting must stop and what is left must be cut: the drain reached `drainTimeout -
   * forceGrace`, or a further signal came during the drain.
   */
  readonly awaitForced: Effect.Effect<ForceReason>
  /** Whether waiting has been forced to stop, without waiting. */
  readonly pollForced: Effect.Effect<Option.Option<ForceReason>>
  /** Time left before work is cut (`awaitForced`); infinite until draining starts. */
  readonly remaining: Effect.Effect<Duration.Duration>
  /**
   * Fails with `ShuttingDown` once draining has started (after the pre-stop delay): the intake check for new
   * work.
   */
  readonly ensureAccepting: Effect.Effect<void, ShuttingDown>
  /** Starts the shutdown programmatically, as a signal does (pre-stop delay, then drain); later calls do nothing. */
  readonly shutdown: (reason: string) => Effect.Effect<void>
  /**
   * A process signal. The first starts the shutdown (or, after `shutdown`, confirms it); a further one during
   * the pre-stop delay skips what is left of it; one during the drain escalates (stop waiting, cut what is
   * left); one after that is `ignored`, and a signal listener exits the process. Says which it did.
   */
  readonly signal: (signal: SignalName) => Effect.Effect<SignalEffect>
  /** Runs work the drain must wait for; refused with `ShuttingDown` once draining. */
  readonly track: <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | ShuttingDown, R>
  /** Components add what they did during the drain; it appears in the shutdown report. */
  readonly reportDrain: (report: DrainReport) => Effect.Effect<void>
}

/** What a signal did to the Lifecycle (see `LifecycleService.signal`). */
export type SignalEffect = "started" | "confirmed" | "preStopSkipped" | "escalated" | "ignored"

/**
 * The Lifecycle service's tag. `layer` provides it (and `runMain` from `keel/node` does so for you); the
 * accessors below (`shutdown`, `track`, `isReady`, ...) read it from the context.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "keel"
 *
 * // A component closes its own intake and stops its loop when draining starts.
 * const accept = (job: string) =>
 *   Effect.gen(function*() {
 *     const lifecycle = yield* Lifecycle.Lifecycle
 *     yield* lifecycle.ensureAccepting // fails with ShuttingDown once draining
 *     yield* Effect.log(`accepted ${job}`)
 *   })
 * const poller = Effect.forever(Effect.sleep("1 second")).pipe(
 *   Effect.raceFirst(Effect.asVoid(Lifecycle.awaitDraining))
 * )
 * ```
 */
export class Lifecycle extends Context.Tag("keel/Lifecycle")<Lifecycle, LifecycleService>() {}

/** Environment variables read through `Config` when an option is not given. */
export const config = {
  /** `KEEL_DRAIN_TIMEOUT`, a duration such as `10 seconds`; 20 seconds when unset. */
  drainTimeout: Config.duration("KEEL_DRAIN_TIMEOUT").pipe(Config.withDefault(Duration.seconds(20))),
  /** `KEEL_PRE_STOP_DELAY`, a duration such as `500 millis`; 0 when unset. */
  preStopDelay: Config.duration("KEEL_PRE_STOP_DELAY").pipe(Config.withDefault(Duration.zero))
}

const resolveDuration = (
  given: Duration.DurationInput | undefined,
  fallback: Config.Config<Duration.Duration>
): Effect.Effect<Duration.Duration, ConfigError.ConfigError> =>
  given === undefined ? fallback : Effect.succeed(Duration.decode(given))

const pollDeferred = <A>(deferred: Deferred.Deferred<A>): Effect.Effect<Option.Option<A>> =>
  Effect.flatMap(Deferred.poll(deferred), (polled) => Option.isNone(polled) ? Effect.succeedNone : Effect.asSome(polled.value))

/**
 * Builds a Lifecycle in a Scope, in phase `running`; its deadline timer lives in that Scope. Fails with a
 * `ConfigError` when a setting not given as an option is read from the environment and is not a duration.
 */
export const make = (options: Options = {}): Effect.Effect<LifecycleService, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const drainTimeout = yield* resolveDuration(options.drainTimeout, config.drainTimeout)
    const preStopDelay = yield* resolveDuration(options.preStopDelay, config.preStopDelay)
    const forceGrace = Duration.min(
      Duration.decode(options.forceGrace ?? Duration.seconds(5)),
      Duration.millis(Duration.toMillis(drainTimeout) / 2)
    )
    const cutAfter = Duration.subtract(drainTimeout, forceGrace)
    const scope = yield* Effect.scope
    const phaseRef = yield* SubscriptionRef.make<Phase>("running")
    const shutdownStarted = yield* Deferred.make<Trigger>()
    const preStopOver = yield* Deferred.make<void>()
    const draining = yield* Deferred.make<Trigger>()
    const forced = yield* Deferred.make<ForceReason>()
    const tracker = yield* Tracker.make
    const reports: Array<DrainReport> = []
    /** When each of `reports` came, in Clock millis: the end of that component's drain. */
    const reportedAt: Array<number> = []
    /** The state of the shutdown, which only moves forward. */
    const state = {
      /** Clock ms of the signal or `shutdown`; undefined while running. */
      shutdownAt: undefined as number | undefined,
      /** Clock ms when the drain started (intake closed); undefined before. */
      drainStartedAt: undefined as number | undefined,
      signalsReceived: 0,
      /** A signal has already escalated the drain: the next one is `ignored` (a listener exits then). */
      escalated: false
    }

    const startDrain = (trigger: Trigger): Effect.Effect<void> =>
      Effect.gen(function*() {
        if (state.drainStartedAt !== undefined) return
        state.drainStartedAt = yield* Clock.currentTimeMillis
        yield* SubscriptionRef.set(phaseRef, "draining")
        yield* tracker.close(Internal.describeTrigger(trigger))
        yield* Effect.sleep(cutAfter).pipe(
          Effect.zipRight(Deferred.succeed(forced, { _tag: "Deadline", after: cutAfter })),
          Effect.interruptible,
          Effect.forkIn(scope)
        )
        yield* Deferred.succeed(draining, trigger)
      }).pipe(Effect.uninterruptible)

    const begin = (trigger: Trigger): Effect.Effect<boolean> =>
      Effect.suspend(() => {
        if (state.shutdownAt !== undefined) return Effect.succeed(false)
        state.shutdownAt = Number.NaN
        return Effect.gen(function*() {
          state.shutdownAt = yield* Clock.currentTimeMillis
          if (Duration.greaterThan(preStopDelay, Duration.zero)) {
            yield* SubscriptionRef.set(phaseRef, "preStop")
            yield* Deferred.succeed(shutdownStarted, trigger)
            // Readiness is false; everything else works until the delay ends or a further signal skips it.
            yield* Effect.raceFirst(Effect.sleep(preStopDelay), Deferred.await(preStopOver)).pipe(
              Effect.zipRight(startDrain(trigger)),
              Effect.interruptible,
              Effect.forkIn(scope)
            )
          } else {
            yield* Deferred.succeed(shutdownStarted, trigger)
            yield* startDrain(trigger)
          }
          return true
        })
      }).pipe(Effect.uninterruptible)

    const service: LifecycleService = {
      drainTimeout,
      preStopDelay,
      forceGrace,
      phase: SubscriptionRef.get(phaseRef),
      phaseChanges: phaseRef.changes,
      isReady: Effect.map(SubscriptionRef.get(phaseRef), (phase) => phase === "running"),
      awaitShutdown: Deferred.await(shutdownStarted),
      awaitDraining: Deferred.await(draining),
      pollDraining: pollDeferred(draining),
      awaitForced: Deferred.await(forced),
      pollForced: pollDeferred(forced),
      remaining: Effect.suspend(() =>
        state.drainStartedAt === undefined
          ? Effect.succeed(Duration.infinity)
          : Effect.map(Clock.currentTimeMillis, (now) =>
            Duration.millis(Math.max(0, state.drainStartedAt! + Duration.toMillis(cutAfter) - now)))
      ),
      ensureAccepting: Effect.flatMap(pollDeferred(draining), (trigger) =>
        Option.isNone(trigger) ? Effect.void : new ShuttingDown({ reason: Internal.describeTrigger(trigger.value) })),
      shutdown: (reason) => Effect.asVoid(begin({ _tag: "Requested", reason })),
      // After `shutdown(reason)` the first signal (an orchestrator's usual SIGTERM) only confirms it; each
      // further signal moves the shutdown one step on: past the pre-stop delay, then to cutting the drain.
      signal: (signal) =>
        Effect.suspend((): Effect.Effect<SignalEffect> => {
          state.signalsReceived++
          if (state.shutdownAt === undefined) return Effect.as(begin({ _tag: "Signal", signal }), "started" as const)
          if (state.signalsReceived === 1) return Effect.succeed("confirmed")
          if (state.drainStartedAt === undefined) {
            return Effect.flatMap(Deferred.await(shutdownStarted), (trigger) =>
              Effect.zipRight(
                Deferred.succeed(preStopOver, undefined),
                Effect.as(startDrain(trigger), "preStopSkipped" as const)
              ))
          }
          if (state.escalated) return Effect.succeed("ignored")
          state.escalated = true
          return Effect.as(Deferred.succeed(forced, { _tag: "Escalated", signal }), "escalated" as const)
        }),
      track: tracker.track,
      reportDrain: (report) =>
        Effect.clockWith((clock) =>
          Effect.sync(() => {
            reports.push(report)
            reportedAt.push(clock.unsafeCurrentTimeMillis())
          })
        )
    }
    return Internal.register(service, {
      tracker,
      drainReports: Effect.sync(() => [...reports]),
      drainReportTimes: Effect.sync(() => [...reportedAt]),
      markStopped: SubscriptionRef.set(phaseRef, "stopped"),
      shutdownAt: Effect.sync(() => Option.fromNullable(Number.isNaN(state.shutdownAt) ? undefined : state.shutdownAt)),
      drainStartedAt: Effect.sync(() => Option.fromNullable(state.drainStartedAt))
    })
  })

/** The Lifecycle as a Layer, built by `make`; fails with a `ConfigError` as `make` does. */
export const layer = (options: Options = {}): Layer.Layer<Lifecycle, ConfigError.ConfigError> =>
  Layer.scoped(Lifecycle, make(options))

// Accessors, so application code reads `Lifecycle.shutdown("reason")`.
/**
 * Starts the shutdown, with trigger `Requested` and this reason, as a signal does: the pre-stop delay (not
 * ready, still serving), then the drain. Does nothing once a shutdown has started. It returns at once and
 * does not wait: `run` walks the phases.
 */
export const shutdown = (reason: string) => Effect.flatMap(Lifecycle, (lifecycle) => lifecycle.shutdown(reason))
/**
 * Completes with the trigger when the shutdown starts: at the signal, before the pre-stop delay (at once if
 * it already has). Readiness is false from then on; intake is still open.
 */
export const awaitShutdown = Effect.flatMap(Lifecycle, (lifecycle) => lifecycle.awaitShutdown)
/**
 * Completes with the trigger when draining starts, after the pre-stop delay (at once if it already has):
 * intake is closed from then on, and listeners should stop accepting.
 */
export const awaitDraining = Effect.flatMap(Lifecycle, (lifecycle) => lifecycle.awaitDraining)
/** The current phase. */
export const phase = Effect.flatMap(Lifecycle, (lifecycle) => lifecycle.phase)
/** True while running, false from the signal on (pre-stop delay included): what a readiness probe should answer. */
export const isReady = Effect.flatMap(Lifecycle, (lifecycle) => lifecycle.isReady)
/**
 * Runs `effect` in the calling fiber as work the drain waits for, under `label`. Fails with `ShuttingDown`
 * (and does not run `effect`) once draining has started. When the deadline or a second signal cuts the
 * wait, the calling fiber is interrupted and `label` is listed as unfinished in the shutdown report.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "keel"
 *
 * const handle = (orderId: string) =>
 *   Lifecycle.track(`order ${orderId}`, Effect.sleep("200 millis")).pipe(
 *     Effect.catchTag("ShuttingDown", (refused) => Effect.logWarning(`order ${orderId} refused: ${refused.message}`))
 *   )
 * ```
 */
export const track = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Lifecycle, (lifecycle) => lifecycle.track(label, effect))

/**
 * What `run` returns: how the program ended, and the shutdown report when there was a drain.
 *
 * @typeParam A - The program's success type.
 * @typeParam E - The program's error type.
 */
export interface RunResult<A, E> {
  /**
   * How the program ended. A program stopped by the drain ends interrupted, or failed with `ShuttingDown`
   * when it met closed intake (`isShutdownCause` tells them from real failures).
   */
  readonly exit: Exit.Exit<A, E>
  /** Present when a shutdown was triggered (signal or `shutdown`), absent when the program just ended. */
  readonly report: Option.Option<ShutdownReport>
}

const timed = <A>(effect: Effect.Effect<A>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const value = yield* effect
    const end = yield* Clock.currentTimeMillis
    return [value, end - start] as const
  })

/**
 * Runs `program` under the Lifecycle. When it ends by itself, its exit is returned. When draining starts
 * first, the phases run in order within the one deadline and the shutdown report is logged and returned.
 * Never fails: the program's failure is in `exit`. `runMain` (`keel/node`) calls it with the process signals
 * wired; call it directly in tests, where `TestClock` drives every phase.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "keel"
 *
 * const program = Effect.gen(function*() {
 *   yield* Effect.fork(Lifecycle.track("job-1", Effect.sleep("100 millis")))
 *   yield* Effect.sleep("10 millis")
 *   yield* Lifecycle.shutdown("deploy")
 *   yield* Effect.never // interrupted by the drain once job-1 is done
 * })
 *
 * const exitCode = Lifecycle.run(program).pipe( // 0: the drain was clean
 *   Effect.map(Lifecycle.exitCode),
 *   Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" }))
 * )
 * ```
 */
export const run = <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<RunResult<A, E>, never, R | Lifecycle> =>
  Effect.gen(function*() {
    // Not a child of this fiber: a child would be awaited when `run` returns, and a program stuck in a
    // finalizer past the deadline and grace must not hold the run. Interrupting `run` still stops it.
    const programFiber = yield* Effect.forkDaemon(program)
    return yield* drive(programFiber).pipe(Effect.onInterrupt(() => Fiber.interruptFork(programFiber)))
  })

const drive = <A, E>(programFiber: Fiber.RuntimeFiber<A, E>): Effect.Effect<RunResult<A, E>, never, Lifecycle> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle
    const internals = yield* Internal.internalsOf(lifecycle)
    const shutdown = yield* Effect.raceFirst(
      Effect.as(Fiber.await(programFiber), Option.none<Trigger>()),
      Effect.asSome(lifecycle.awaitShutdown)
    )
    if (Option.isNone(shutdown)) {
      yield* internals.markStopped
      return { exit: yield* Fiber.await(programFiber), report: Option.none() }
    }
    const trigger = shutdown.value
    const phases: Array<PhaseTiming> = []
    const further = trigger._tag === "Signal" ? `a second ${trigger.signal}` : "a signal"
    if (Duration.greaterThan(lifecycle.preStopDelay, Duration.zero)) {
      yield* Effect.logInfo(
        `shutting down (${Internal.describeTrigger(trigger)}): not ready; serving on for the pre-stop delay of ` +
          `${Duration.format(lifecycle.preStopDelay)} (${further} skips it), then draining`
      )
      const [, durationMs] = yield* timed(lifecycle.awaitDraining)
      phases.push({ phase: "preStop", durationMs })
    } else {
      yield* lifecycle.awaitDraining
    }
    yield* Effect.logInfo(
      `draining (${Internal.describeTrigger(trigger)}): intake closed, deadline ${Duration.format(lifecycle.drainTimeout)}` +
        (trigger._tag === "Signal" ? `; a further ${trigger.signal} stops waiting` : "")
    )
    const stopWaiting = lifecycle.awaitForced
    // Once work is cut, interrupted work and finalizers share one grace: the drain ends at the deadline.
    const abandon = yield* Effect.forkDaemon(Effect.zipRight(stopWaiting, Effect.sleep(lifecycle.forceGrace)))

    const [settlement, inFlightMs] = yield* timed(internals.tracker.settle(stopWaiting, lifecycle.forceGrace))
    phases.push({ phase: "inFlight", durationMs: inFlightMs })
    if (settlement.finished + settlement.interrupted.length > 0) {
      yield* lifecycle.reportDrain({
        component: "tracked",
        durationMs: inFlightMs,
        finished: settlement.finished,
        forced: settlement.interrupted.length,
        unfinished: settlement.interrupted
      })
    }

    // Interrupting the program closes its Scopes: Layer finalizers run in reverse dependency order.
    const stopper = yield* Effect.forkDaemon(Fiber.interrupt(programFiber))
    const [finalizersDone, finalizersMs] = yield* timed(Effect.raceFirst(
      Effect.as(Fiber.await(stopper), true),
      Effect.as(Fiber.await(abandon), false)
    ))
    yield* Fiber.interrupt(abandon)
    phases.push({ phase: "finalizers", durationMs: finalizersMs })

    const exit = Option.getOrElse(yield* Fiber.poll(programFiber), () => Exit.interrupt(Fiber.id(programFiber)))
    const forcedBy = yield* lifecycle.pollForced
    yield* internals.markStopped
    const report = yield* buildReport(lifecycle, trigger, phases, forcedBy, !finalizersDone, programFiber, [stopper, abandon])
    yield* Effect.logInfo(renderReport(report))
    const reportTimes = yield* internals.drainReportTimes
    yield* traceShutdown({
      ...report,
      trigger: Internal.describeTrigger(trigger),
      components: report.components.map((component, index) => ({ ...component, reportedAt: reportTimes[index] ?? 0 }))
    }, yield* Clock.currentTimeMillis)
    return { exit, report: Option.some(report) }
  })

const buildReport = (
  lifecycle: LifecycleService,
  trigger: Trigger,
  phases: ReadonlyArray<PhaseTiming>,
  forcedPoll: Option.Option<ForceReason>,
  finalizersAbandoned: boolean,
  program: Fiber.RuntimeFiber<unknown, unknown>,
  /** The drive's own fibers, not leftovers of the program. */
  ignore: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>
) =>
  Effect.gen(function*() {
    const internals = yield* Internal.internalsOf(lifecycle)
    const components = yield* internals.drainReports
    const startedAt = Option.getOrElse(yield* internals.shutdownAt, () => 0)
    const now = yield* Clock.currentTimeMillis
    const forced = components.reduce((sum, component) => sum + component.forced, 0)
    const unfinished = components.flatMap((component) => component.unfinished)
    const workWasCut = forced > 0 || finalizersAbandoned
    const forcedBy = Option.filter(forcedPoll, (reason) => reason._tag === "Escalated" || workWasCut)
    const outcome: ShutdownReport["outcome"] = Option.isNone(forcedBy)
      ? "clean"
      : forcedBy.value._tag === "Escalated"
      ? "escalated"
      : "forced"
    const leftovers = outcome === "clean" && !finalizersAbandoned
      ? Option.none()
      : Option.some(yield* Leftovers.collect({ ignore, names: new Map([[program, "program"]]) }))
    const report: ShutdownReport = {
      trigger,
      outcome,
      forcedBy,
      drainTimeoutMs: Duration.toMillis(lifecycle.drainTimeout),
      preStopDelayMs: Duration.toMillis(lifecycle.preStopDelay),
      totalMs: now - startedAt,
      phases,
      components,
      finished: components.reduce((sum, component) => sum + component.finished, 0),
      forced,
      unfinished,
      finalizersAbandoned,
      leftovers
    }
    return report
  })

const exitCodes: Record<SignalName, number> = { SIGINT: 130, SIGTERM: 143 }

/** A program stopped by the drain ends interrupted, or failed with `ShuttingDown`: neither is a failure. */
export const isShutdownCause = (cause: Cause.Cause<unknown>): boolean =>
  Chunk.isEmpty(Cause.defects(cause)) && Chunk.every(Cause.failures(cause), (error) => error instanceof ShuttingDown)

/**
 * The process exit code for a run: 0 after a clean drain or success, 1 after a forced drain or a failure,
 * 130 / 143 when a second SIGINT / SIGTERM cut the drain short.
 */
export const exitCode = <A, E>(result: RunResult<A, E>): number => {
  if (Option.isSome(result.report)) {
    const { forcedBy, outcome } = result.report.value
    if (Option.isSome(forcedBy) && forcedBy.value._tag === "Escalated") return exitCodes[forcedBy.value.signal]
    if (outcome !== "clean") return 1
    return Exit.isSuccess(result.exit) || isShutdownCause(result.exit.cause) ? 0 : 1
  }
  return Exit.isSuccess(result.exit) || isRefusedIntake(result.exit.cause) ? 0 : 1
}

/** A program that ended because intake was closed on it (it met `ShuttingDown`) did not fail. */
const isRefusedIntake = (cause: Cause.Cause<unknown>): boolean =>
  !Chunk.isEmpty(Cause.failures(cause)) && isShutdownCause(cause)

/** The report as a few readable lines, for logs and terminals. */
export const renderReport = (report: ShutdownReport): string => {
  const forcedBy = Option.match(report.forcedBy, {
    onNone: () => "",
    onSome: (reason) =>
      reason._tag === "Deadline"
        ? ` (deadline reached: work cut after ${Duration.format(reason.after)} of ${Duration.millis(report.drainTimeoutMs).pipe(Duration.format)})`
        : ` (second ${reason.signal})`
  })
  const lines = [
    `shutdown ${report.outcome}${forcedBy}: trigger ${Internal.describeTrigger(report.trigger)}, ` +
    `${report.finished} finished, ${report.forced} forced, ${report.unfinished.length} unfinished, ` +
    `${report.totalMs} ms of ${report.preStopDelayMs + report.drainTimeoutMs} ms`,
    `  phases: ${report.phases.map((timing) => `${timing.phase} ${timing.durationMs} ms`).join(", ")}`,
    ...report.components.map((component) =>
      `  ${component.component}: ${component.finished} finished, ${component.forced} forced, ` +
      `${component.unfinished.length} unfinished in ${component.durationMs} ms` +
      (component.unfinished.length > 0 ? ` [${component.unfinished.join(", ")}]` : "")
    )
  ]
  if (report.finalizersAbandoned) lines.push("  finalizers were still running at the deadline and were abandoned")
  if (Option.isSome(report.leftovers)) {
    lines.push(...(Leftovers.isEmpty(report.leftovers.value) ? ["  nothing left alive"] : Leftovers.render(report.leftovers.value)))
  }
  return lines.join("\n")
}
