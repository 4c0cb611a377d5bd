/**
 * circuitBreaker — stop calling a dependency that keeps failing, and find out cheaply when it is back.
 *
 * Closed, calls pass and their outcomes are counted by a policy: a run of consecutive failures, or a
 * failure rate over a sliding window of time. When the policy trips, the breaker opens: calls fail at once
 * with `CircuitOpen { retryAfter }` without reaching the service. Once `openFor` has passed it is half-open:
 * `trialCalls` calls at a time go through as trials, the rest are still refused; a trial failure opens it
 * again for another `openFor`, `successesToClose` trial successes close it. `isolate` holds it open until
 * `reset`, which closes it with its counters cleared.
 *
 * What counts: a typed failure the `isFailure` predicate accepts (all, by default) is a failure; a typed
 * failure it rejects is a success, because the service did answer; a defect is a failure only with
 * `countDefects: true` (else it counts as nothing: it may come from our own code, not the dependency); an
 * interruption never counts. An outcome is counted only in the state the call was admitted in: a slow
 * call admitted while closed that ends after the breaker opened, or after a `reset`, is not counted. A
 * trial's slot is freed however the trial ends, interruption included, so a hung trial should be bounded
 * by a `timeout` placed below the breaker (its `Timeout` is then a failure).
 *
 * Time is the Clock of the fiber that built the breaker, and there are no timers: the move from open to
 * half-open happens when a call, a read of `state` or `stats`, or a new `changes` subscriber observes that
 * `openFor` has passed. Every decision is one synchronous step over the breaker's state, so concurrent
 * calls see one order of transitions, and `changes` publishes them in that order. The rate window is ten
 * buckets of window / 10, aligned on Clock time: a call counts while its bucket is one of the ten latest,
 * so it stops counting between nine tenths of the window and the whole window after it ended.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import type * as Scope from "effect/Scope"
import { CircuitOpen } from "../Errors.js"
import * as MetricSeries from "../internal/MetricSeries.js"
import * as Instruments from "../internal/middlewareInstruments.js"
import { recordEvent } from "../internal/tracing.js"
import * as Validation from "../internal/Validation.js"
import type { Middleware, Service } from "./Middleware.js"

/** How the closed breaker decides to open: after a run of consecutive failures, or on a failure rate. */
export type CircuitPolicy =
  /** Opens after `failures` counted failures in a row (a success restarts the run). */
  | {
    /** Selects the consecutive-failures policy. */
    readonly kind: "consecutive"
    /** Counted failures in a row that open the breaker: an integer ≥ 1. */
    readonly failures: number
  }
  /**
   * Opens when, over the last `window`, at least `minimumCalls` counted calls ended and the share of them
   * that failed is at least `failureRate` (0 < rate ≤ 1). Checked after every counted outcome.
   */
  | {
    /** Selects the failure-rate policy. */
    readonly kind: "rate"
    /**
     * The sliding window outcomes are counted over: a positive, finite duration, cut into ten buckets
     * (see the module's description).
     */
    readonly window: Duration.DurationInput
    /** Counted calls the window must hold before the rate is judged at all: an integer ≥ 1. */
    readonly minimumCalls: number
    /** The share of failures, in (0, 1], at or above which the breaker opens (0.5: half the calls failed). */
    readonly failureRate: number
  }

/**
 * How `circuitBreaker` builds a breaker. Invalid values (a non-positive `openFor`, a count that is not a
 * positive integer, a `failureRate` outside (0, 1]) are a programming error: building the breaker dies.
 *
 * @typeParam E - The errors of the services the breaker wraps, as `isFailure` receives them.
 */
export interface CircuitBreakerOptions<E = unknown> {
  /** Names the breaker in errors (`CircuitOpen.breaker`) and metrics. Default `circuit-breaker`. */
  readonly name?: string
  /** When the closed breaker opens: a run of consecutive failures or a failure rate over a window. */
  readonly policy: CircuitPolicy
  /** How long the breaker stays open before it lets trials through: a positive, finite duration. */
  readonly openFor: Duration.DurationInput
  /** Trials admitted at once while half-open. Default 1. */
  readonly trialCalls?: number
  /** Trial successes that close the breaker. Default 1. */
  readonly successesToClose?: number
  /** Which typed failures count as failures; the others count as successes. Default: all. */
  readonly isFailure?: (error: E) => boolean
  /** Counts defects as failures. Default false: a defect counts as nothing. */
  readonly countDefects?: boolean
}

/** The breaker's state; `Open.until` is the Clock time (ms) from which it lets trials through. */
export type CircuitState = Data.TaggedEnum<{
  /** Calls pass, and their outcomes are counted by the policy. */
  Closed: {}
  /** Calls are refused with `CircuitOpen` until `until`. */
  Open: {
    /** The Clock time (ms) from which the breaker lets trials through (half-open). */
    readonly until: number
  }
  /** Trials pass, `trialCalls` at a time; the other calls are refused. */
  HalfOpen: {}
  /** Every call is refused until `reset` (after `isolate`). */
  Isolated: {}
}>

/**
 * Constructors and matchers of `CircuitState` (`CircuitState.Closed()`, `CircuitState.$is("Open")`,
 * `CircuitState.$match`), for tests and for code that follows a breaker's `changes`.
 *
 * @property __type.Closed - Makes the `Closed` state: `CircuitState.Closed()`.
 * @property __type.Open - Makes the `Open` state: `CircuitState.Open({ until })`, `until` in Clock ms.
 * @property __type.HalfOpen - Makes the `HalfOpen` state: `CircuitState.HalfOpen()`.
 * @property __type.Isolated - Makes the `Isolated` state: `CircuitState.Isolated()`.
 */
export const CircuitState = Data.taggedEnum<CircuitState>()

/** The value of the `keel_circuit_state` gauge for each state. */
const circuitStateCode: { readonly [Tag in CircuitState["_tag"]]: number } = {
  Closed: 0,
  HalfOpen: 1,
  Open: 2,
  Isolated: 3
}


/** A breaker's counters at one instant, as its `stats` returns them. */
export interface CircuitBreakerStats {
  /** The breaker's name (its `name` option, default `circuit-breaker`). */
  readonly name: string
  /** The state now (reading it may have moved an open breaker whose time is up to half-open). */
  readonly state: CircuitState
  /** Consecutive policy: the current run of failures (0 unless closed). */
  readonly consecutiveFailures: number
  /** Rate policy: counted calls in the window now (0 unless closed). */
  readonly windowCalls: number
  /** Rate policy: counted failures in the window now (0 unless closed). */
  readonly windowFailures: number
  /** Half-open: trials running now (0 otherwise). */
  readonly trialsInFlight: number
  /** Half-open: trials that succeeded so far in this half-open period (0 otherwise). */
  readonly trialSuccesses: number
  /** Calls let through to the service since the breaker was built (trials included); not cleared by `reset`. */
  readonly admitted: number
  /** Calls refused with `CircuitOpen` since the breaker was built; not cleared by `reset`. */
  readonly rejected: number
  /** State changes since the breaker was built (each one `changes` publishes); not cleared by `reset`. */
  readonly transitions: number
}

/**
 * A circuit breaker, as `circuitBreaker` builds it: a middleware — apply it to a service or put it in a
 * `stack` like any other — that is also the means to watch and steer the breaker. Wrapping a service, it
 * refuses calls with `CircuitOpen` while open and counts the outcomes of the others. It lives as long as
 * the Scope it was built in.
 *
 * @typeParam E - The errors of the services it wraps, as its `isFailure` option inspects them: with the
 * default `unknown` it wraps any service, with a narrower `E` only services whose errors are `E`.
 */
export interface CircuitBreaker<E = unknown> extends Middleware<CircuitOpen, never, unknown, E> {
  /** The state now (observing it may move an open breaker whose time is up to half-open). */
  readonly state: Effect.Effect<CircuitState>
  /** The state now, then every transition in order; ends when the breaker's Scope closes. */
  readonly changes: Stream.Stream<CircuitState>
  /** Holds the breaker open, refusing every call, until `reset`. */
  readonly isolate: Effect.Effect<void>
  /** Closes the breaker and clears its counters; outcomes of calls admitted before are not counted. */
  readonly reset: Effect.Effect<void>
  /** The counters now, for tests and status pages. */
  readonly stats: Effect.Effect<CircuitBreakerStats>
}

/** Buckets in the rate policy's sliding window. */
const circuitWindowBuckets = 10

/** Why a call was refused, as the `reason` tag of the rejections counter. */
export type CircuitRejection = "open" | "half-open" | "isolated"

const breakerMetrics = {
  state: Metric.gauge("keel_circuit_state", {
    description: "circuit breaker state: 0 closed, 1 half-open, 2 open, 3 isolated"
  }),
  transitions: Metric.counter("keel_circuit_transitions_total", { incremental: true })
}

/**
 * The metrics of the breaker named `breaker`, to read or export them: its state gauge (tagged
 * `breaker`), its rejections (`keel_middleware_rejections_total`, tagged `middleware=<breaker>` and
 * `reason`), and its transitions (tagged `breaker`, `from`, `to`).
 */
export const circuitBreakerMetrics = (breaker: string): CircuitBreakerMetrics => {
  const { asBreaker, asMiddleware } = seriesOf(breaker)
  return {
    state: asBreaker.of(breakerMetrics.state),
    rejections: (reason) => asMiddleware.of(Instruments.rejections, { reason }),
    transitions: (from, to) => asBreaker.of(breakerMetrics.transitions, { from, to })
  }
}

/** A breaker's series: its state and transitions by `breaker`, its rejections by `middleware` as every limit's. */
const seriesOf = (breaker: string) => ({
  asBreaker: MetricSeries.series("breaker", breaker),
  asMiddleware: MetricSeries.series("middleware", breaker)
})

/** The metric series of one breaker, as `circuitBreakerMetrics` returns them. */
export interface CircuitBreakerMetrics {
  /** 0 closed, 1 half-open, 2 open, 3 isolated. */
  readonly state: Metric.Metric.Gauge<number>
  /** Calls refused, by reason. */
  readonly rejections: (reason: CircuitRejection) => Metric.Metric.Counter<number>
  /** State changes, by the state left and the state entered. */
  readonly transitions: (from: CircuitState["_tag"], to: CircuitState["_tag"]) => Metric.Metric.Counter<number>
}

type Outcome = "success" | "failure" | "uncounted"

/** A call's admission: the state generation it belongs to and whether it holds a trial slot. */
interface Ticket {
  readonly generation: number
  readonly trial: boolean
}

interface Published {
  readonly sequence: number
  readonly state: CircuitState
}

/** The options, checked: dies with `IllegalArgumentException` naming each invalid one. */
const validate = <E>(options: CircuitBreakerOptions<E>): Effect.Effect<void> => {
  const openFor = Validation.tryDuration(options.openFor)
  const policy = options.policy
  const positiveInteger = (name: string, value: number | undefined): Validation.Check =>
    [name, value, value === undefined || Validation.isIntegerFrom(value, 1), Validation.integerFrom(1)]
  const policyChecks = (): ReadonlyArray<Validation.Check> => {
    switch (policy.kind) {
      case "consecutive":
        return [positiveInteger("policy.failures", policy.failures)]
      case "rate": {
        const window = Validation.tryDuration(policy.window)
        return [
          ["policy.window", window ?? policy.window, window !== undefined && Validation.isPositiveFinite(window), "a finite duration > 0"],
          positiveInteger("policy.minimumCalls", policy.minimumCalls),
          ["policy.failureRate", policy.failureRate, policy.failureRate > 0 && policy.failureRate <= 1, "in (0, 1]"]
        ]
      }
      default:
        return [["policy", JSON.stringify(policy), false, `"consecutive" or "rate"`]]
    }
  }
  return Validation.validate("Middleware.circuitBreaker", [
    ["openFor", openFor ?? options.openFor, openFor !== undefined && Validation.isPositiveFinite(openFor), "a finite duration > 0"],
    positiveInteger("trialCalls", options.trialCalls),
    positiveInteger("successesToClose", options.successesToClose),
    ...policyChecks()
  ])
}

/** Counts the closed breaker's outcomes and says when to open. */
interface Tripwire {
  /** Records a counted outcome at `now`; true when the breaker must open. */
  readonly record: (failed: boolean, now: number) => boolean
  readonly clear: () => void
  readonly consecutiveFailures: () => number
  readonly window: (now: number) => { readonly calls: number; readonly failures: number }
}

const consecutiveTripwire = (threshold: number): Tripwire => {
  let run = 0
  return {
    record: (failed) => {
      run = failed ? run + 1 : 0
      return run >= threshold
    },
    clear: () => {
      run = 0
    },
    consecutiveFailures: () => run,
    window: () => ({ calls: 0, failures: 0 })
  }
}

const rateTripwire = (windowMillis: number, minimumCalls: number, failureRate: number): Tripwire => {
  const bucketMillis = windowMillis / circuitWindowBuckets
  const bucketOf = Array<number>(circuitWindowBuckets).fill(Number.NEGATIVE_INFINITY)
  const calls = Array<number>(circuitWindowBuckets).fill(0)
  const failures = Array<number>(circuitWindowBuckets).fill(0)
  const bucketAt = (now: number) => Math.floor(now / bucketMillis)
  const totals = (now: number) => {
    const current = bucketAt(now)
    let windowCalls = 0
    let windowFailures = 0
    for (let slot = 0; slot < circuitWindowBuckets; slot++) {
      const bucket = bucketOf[slot]!
      if (bucket <= current && bucket > current - circuitWindowBuckets) {
        windowCalls += calls[slot]!
        windowFailures += failures[slot]!
      }
    }
    return { calls: windowCalls, failures: windowFailures }
  }
  return {
    record: (failed, now) => {
      const bucket = bucketAt(now)
      const slot = ((bucket % circuitWindowBuckets) + circuitWindowBuckets) % circuitWindowBuckets
      if (bucketOf[slot] !== bucket) {
        bucketOf[slot] = bucket
        calls[slot] = 0
        failures[slot] = 0
      }
      calls[slot]!++
      if (failed) failures[slot]!++
      const window = totals(now)
      return window.calls >= minimumCalls && window.failures / window.calls >= failureRate
    },
    clear: () => {
      bucketOf.fill(Number.NEGATIVE_INFINITY)
      calls.fill(0)
      failures.fill(0)
    },
    consecutiveFailures: () => 0,
    window: totals
  }
}

/**
 * Builds a circuit breaker living in the current Scope (closing it ends every `changes` stream). The
 * breaker is itself the middleware: it fails refused calls with `CircuitOpen`, and goes in a `stack` like
 * any other. `E` is the error type of the services it wraps (what `isFailure` inspects); leave it `unknown`
 * to wrap any service. Dies with `IllegalArgumentException` naming an invalid option.
 *
 * @typeParam E - The errors of the services it wraps.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware, Unavailable } from "keel"
 *
 * const charge = (amount: number) => Effect.fail(new Unavailable({ reason: `gateway down (${amount})` }))
 *
 * const program = Effect.gen(function*() {
 *   const breaker = yield* Middleware.circuitBreaker({
 *     policy: { kind: "consecutive", failures: 3 },
 *     openFor: "5 seconds"
 *   })
 *   const guarded = breaker(charge)
 *   yield* Effect.forEach([1, 2, 3, 4], (amount) => Effect.either(guarded(amount)))
 *   return yield* breaker.state // Open: the 4th call failed with CircuitOpen without calling charge
 * }).pipe(Effect.scoped)
 * ```
 */
export const circuitBreaker = <E = unknown>(
  options: CircuitBreakerOptions<E>
): Effect.Effect<CircuitBreaker<E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    yield* validate(options)

    const clock = yield* Effect.clock
    const name = options.name ?? "circuit-breaker"
    const openForMillis = Duration.toMillis(options.openFor)
    const trialCalls = options.trialCalls ?? 1
    const successesToClose = options.successesToClose ?? 1
    const isFailure = options.isFailure ?? (() => true)
    const countDefects = options.countDefects ?? false
    const policy = options.policy
    const tripwire = policy.kind === "consecutive"
      ? consecutiveTripwire(policy.failures)
      : rateTripwire(Duration.toMillis(policy.window), policy.minimumCalls, policy.failureRate)

    const { asBreaker, asMiddleware } = seriesOf(name)
    const stateTags = asBreaker.labels
    const rejectionTags: Record<CircuitRejection, ReadonlyArray<MetricLabel.MetricLabel>> = {
      open: asMiddleware.labelsWith({ reason: "open" }),
      "half-open": asMiddleware.labelsWith({ reason: "half-open" }),
      isolated: asMiddleware.labelsWith({ reason: "isolated" })
    }
    const transitionTagsOf = (from: CircuitState["_tag"], to: CircuitState["_tag"]) => asBreaker.labelsWith({ from, to })

    // Subscribers get the transitions after their snapshot (sequence numbers drop the ones before).
    const published = yield* PubSub.unbounded<Published>()
    yield* Effect.addFinalizer(() => PubSub.shutdown(published))

    let current: CircuitState = CircuitState.Closed()
    // Bumped on every transition and reset: an outcome counts only for its own generation.
    let generation = 0
    let sequence = 0
    let trialsInFlight = 0
    let trialSuccesses = 0
    const totals = { admitted: 0, rejected: 0 }
    breakerMetrics.state.unsafeUpdate(circuitStateCode.Closed, stateTags)

    const enter = (next: CircuitState) => {
      const from = current._tag
      current = next
      generation++
      trialsInFlight = 0
      trialSuccesses = 0
      tripwire.clear()
      sequence++
      breakerMetrics.state.unsafeUpdate(circuitStateCode[next._tag], stateTags)
      breakerMetrics.transitions.unsafeUpdate(1, transitionTagsOf(from, next._tag))
      published.unsafeOffer({ sequence, state: next })
    }

    const open = (now: number) => enter(CircuitState.Open({ until: now + openForMillis }))

    const observe = (now: number) => {
      if (current._tag === "Open" && now >= current.until) enter(CircuitState.HalfOpen())
      return current
    }

    const reject = (state: CircuitOpen["state"], reason: CircuitRejection, retryAfter: Duration.Duration) => {
      totals.rejected++
      Instruments.rejections.unsafeUpdate(1, rejectionTags[reason])
      return Effect.zipRight(
        recordEvent("keel.circuit_breaker.rejected", {
          "keel.breaker": name,
          "keel.breaker.state": state,
          "keel.rejection.reason": reason,
          "keel.retry_after_ms": Duration.toMillis(retryAfter)
        }),
        Effect.fail(new CircuitOpen({ breaker: name, state, retryAfter }))
      )
    }

    const admit = Effect.suspend((): Effect.Effect<Ticket, CircuitOpen> => {
      const now = clock.unsafeCurrentTimeMillis()
      const state = observe(now)
      switch (state._tag) {
        case "Closed":
          totals.admitted++
          return Effect.succeed({ generation, trial: false })
        case "HalfOpen":
          if (trialsInFlight >= trialCalls) return reject("HalfOpen", "half-open", Duration.millis(openForMillis))
          trialsInFlight++
          totals.admitted++
          return Effect.succeed({ generation, trial: true })
        case "Open":
          return reject("Open", "open", Duration.millis(state.until - now))
        case "Isolated":
          return reject("Isolated", "isolated", Duration.infinity)
      }
    })

    const classify = (exit: Exit.Exit<unknown, E>): Outcome => {
      if (Exit.isSuccess(exit)) return "success"
      const failures = Cause.failures(exit.cause)
      if (Chunk.some(failures, isFailure)) return "failure"
      if (countDefects && !Chunk.isEmpty(Cause.defects(exit.cause))) return "failure"
      return Chunk.isEmpty(failures) ? "uncounted" : "success"
    }

    const settle = (ticket: Ticket, exit: Exit.Exit<unknown, E>) =>
      Effect.sync(() => {
        if (ticket.generation !== generation) return
        const outcome = classify(exit)
        const now = clock.unsafeCurrentTimeMillis()
        if (ticket.trial) {
          trialsInFlight--
          if (outcome === "failure") open(now)
          else if (outcome === "success" && ++trialSuccesses >= successesToClose) enter(CircuitState.Closed())
        } else if (outcome !== "uncounted" && tripwire.record(outcome === "failure", now)) {
          open(now)
        }
      })

    const middleware = <Req, Res, EService extends E, R>(
      service: Service<Req, Res, EService, R>
    ): Service<Req, Res, EService | CircuitOpen, R> =>
    (request) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(admit, (ticket) =>
          restore(Effect.suspend(() => service(request))).pipe(
            Effect.onExit((exit) => settle(ticket, exit))
          ))
      )

    const changes: Stream.Stream<CircuitState> = Stream.unwrapScoped(
      Effect.map(PubSub.subscribe(published), (subscription) => {
        const snapshot = observe(clock.unsafeCurrentTimeMillis())
        const seen = sequence
        return Stream.concat(
          Stream.succeed(snapshot),
          Stream.fromQueue(subscription).pipe(
            Stream.filter((change) => change.sequence > seen),
            Stream.map((change) => change.state)
          )
        )
      })
    )

    const breaker: CircuitBreaker<E> = Object.assign(middleware as Middleware<CircuitOpen, never, unknown, E>, {
      state: Effect.sync(() => observe(clock.unsafeCurrentTimeMillis())),
      changes,
      isolate: Effect.sync(() => {
        if (current._tag !== "Isolated") enter(CircuitState.Isolated())
      }),
      reset: Effect.sync(() => {
        if (current._tag !== "Closed") return enter(CircuitState.Closed())
        generation++
        tripwire.clear()
      }),
      stats: Effect.sync(() => {
        const now = clock.unsafeCurrentTimeMillis()
        const state = observe(now)
        const window = tripwire.window(now)
        return {
          name,
          state,
          consecutiveFailures: tripwire.consecutiveFailures(),
          windowCalls: window.calls,
          windowFailures: window.failures,
          trialsInFlight,
          trialSuccesses,
          admitted: totals.admitted,
          rejected: totals.rejected,
          transitions: sequence
        }
      })
    })
    return breaker
  })
