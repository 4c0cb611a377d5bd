/**
 * Backoff — when to try again, stated as a policy: exponential growth, a hard cap, jitter, a limit on
 * attempts and on elapsed time, which failures deserve another attempt, and respect for a server's
 * Retry-After. The result is one Effect `Schedule`, for `Effect.retry`, `Effect.repeat` and the `retry`
 * option of `WorkerPool`.
 *
 * Effect's own pieces do not add up to that: `Schedule.exponential` has no cap, `Schedule.upTo` stops only
 * after the total has passed its limit, `Schedule.jittered` scales a delay by U[0.8, 1.2) (so a capped
 * delay ends up above the cap), `jitteredWith` cannot express equal jitter, and decorrelated jitter, which
 * depends on the previous delay, does not exist. So the whole policy is one step function over explicit
 * state (retries so far, the previous delay, when the first failure came): the jitter formulas are those of
 * the AWS Architecture Blog's "Exponential Backoff And Jitter", every delay is clamped to `max` after jitter,
 * and the limits are checked before waiting, not after. Random numbers come from Effect's `Random` and time
 * from the schedule's clock, so a seed reproduces a sequence, TestClock drives it, and `delays` lists a
 * policy's delays without sleeping.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleInterval from "effect/ScheduleInterval"
import { Unavailable } from "./Errors.js"
import * as Validation from "./internal/Validation.js"

/**
 * How a delay is drawn around expo(n) = min(max, base·factor^n), n counting retries from 0:
 * - `none`: expo(n);
 * - `full` (the default; in Brooker's contention simulation it does the least work): U(0, expo(n));
 * - `equal`: expo(n)/2 + U(0, expo(n)/2);
 * - `decorrelated`: min(max, U(base, previous·3)), where previous is the delay chosen before (base at first);
 * - `proportional`: Effect's own `Schedule.jittered`, expo(n)·U[0.8, 1.2), capped at max.
 */
export type Jitter = "none" | "full" | "equal" | "decorrelated" | "proportional"

/**
 * A backoff policy, as `exponential` and `delays` take it. Only `base` and `max` are required; durations are
 * Effect `DurationInput`s (`"200 millis"`, `Duration.seconds(1)`, or a number of ms).
 *
 * @typeParam E - The failures the schedule is fed (its input), as `retryOn` sees them.
 */
export interface Policy<E = unknown> {
  /** The first delay before jitter, expo(0). Must be positive. */
  readonly base: Duration.DurationInput
  /** Growth per retry, at least 1. Default 2. */
  readonly factor?: number
  /** No delay ever exceeds it, jitter and Retry-After included. At least `base`, and finite. */
  readonly max: Duration.DurationInput
  /** How each delay is drawn around the exponential curve (see `Jitter`). Default `full`. */
  readonly jitter?: Jitter
  /** Attempts in total, the first one included: at most `maxAttempts − 1` retries. Default: no limit. */
  readonly maxAttempts?: number
  /**
   * Stops rather than wait a delay that would end more than this long after the first failure the schedule
   * saw (it sees nothing earlier, so the first attempt's own duration is not counted). Default: no limit.
   */
  readonly maxElapsed?: Duration.DurationInput
  /**
   * Whether a failure deserves another attempt; the schedule stops at the first one that does not.
   * Default `isRetryable`. With `Effect.repeat` the inputs are successes: pass a predicate over them.
   */
  readonly retryOn?: (error: E) => boolean
}

/**
 * Options of `delays`.
 *
 * @typeParam E - The policy's failure type.
 */
export interface ListingOptions<E> {
  /** Runs the listing under `Random.make(seed)`; without it, the ambient `Random` is used. */
  readonly seed?: number
  /**
   * The failure fed to every step, through `retryOn` and Retry-After. Without it the listing shows the
   * policy's timing alone: every step gets a retryable failure with no Retry-After.
   */
  readonly failure?: E
}

/**
 * The default retry predicate, by `_tag`: `Timeout` and `Unavailable` are retried; `Invalid` never is, and
 * neither is anything else. A policy over errors of your own passes its own `retryOn`.
 */
export const isRetryable = (error: unknown): boolean =>
  Predicate.isTagged(error, "Timeout") || Predicate.isTagged(error, "Unavailable")

/**
 * The policy as a `Schedule`. Each step decides, in order: stop if `retryOn` refuses the failure or
 * `maxAttempts` is reached; draw the delay; if the failure carries a `retryAfter` Duration, wait at least
 * that long — or stop if `retryAfter` exceeds `max`, since waiting less would disrespect the server and
 * waiting more would break the cap (the caller then gets the failure with its `retryAfter`); stop if the
 * delay would end past `maxElapsed`. The output is the delay chosen (`Duration.zero` on the step that
 * stops). Decorrelated jitter grows from the delay actually waited, Retry-After included.
 *
 * Throws `IllegalArgumentException` on an invalid policy: that is a programming error.
 *
 * @typeParam E - The failures the schedule is fed; inferred from `retryOn`, else `unknown`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Backoff, Unavailable } from "keel"
 *
 * // Up to 5 attempts, 100 ms growing to at most 5 s, with full jitter; `Timeout` and `Unavailable` retried.
 * const policy = Backoff.exponential({ base: "100 millis", max: "5 seconds", maxAttempts: 5 })
 * const callUpstream = Effect.fail(new Unavailable({ reason: "upstream is restarting" }))
 * const program = Effect.retry(callUpstream, policy)
 * ```
 */
export const exponential = <E = unknown>(policy: Policy<E>): Schedule.Schedule<Duration.Duration, E> => {
  const resolved = resolve(policy)
  return Schedule.makeWithState(initialState(resolved), stepOf(resolved))
}

/**
 * The first `count` delays of a policy, computed without sleeping; fewer if the policy stops sooner.
 * Random numbers come from the ambient `Random` (or `seed`), so the same seed lists the delays the policy
 * waits under `Effect.withRandom(Random.make(seed))`. Dies with `IllegalArgumentException` if `count` is not an
 * integer ≥ 0 or the policy is invalid.
 *
 * @typeParam E - The policy's failure type.
 *
 * @example
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Backoff } from "keel"
 *
 * const listing = Backoff.delays({ base: "100 millis", max: "2 seconds", jitter: "equal" }, 6, { seed: 42 })
 * const program = Effect.flatMap(listing, (delays) => Effect.log(delays.map(Duration.format).join(", ")))
 * ```
 */
export const delays = <E = unknown>(
  policy: Policy<E>,
  count: number,
  options: ListingOptions<E> = {}
): Effect.Effect<ReadonlyArray<Duration.Duration>> =>
  Effect.suspend(() => {
    Validation.assertValid("Backoff.delays", [
      ["count", count, Validation.isIntegerFrom(count, 0), Validation.integerFrom(0)]
    ])
    const listing = options.failure === undefined
      ? list(resolve({ ...policy, retryOn: alwaysRetry }), count, timingOnly)
      : list(resolve(policy), count, options.failure)
    return options.seed === undefined ? listing : Effect.withRandom(listing, Random.make(options.seed))
  })

// ---------------------------------------------------------------------------------------------------------

interface State {
  /** Retries scheduled so far: the n of expo(n) for the next delay. */
  readonly retries: number
  readonly previousDelayMillis: number
  /** Clock time of the first input, from which `maxElapsed` is measured. */
  readonly startedAt: number | undefined
}

interface Resolved<E> {
  readonly baseMillis: number
  readonly factor: number
  readonly maxMillis: number
  readonly jitter: Jitter
  readonly maxAttempts: number
  readonly maxElapsedMillis: number
  readonly retryOn: (error: E) => boolean
}

type Step<E> = (
  now: number,
  input: E,
  state: State
) => Effect.Effect<readonly [State, Duration.Duration, ScheduleDecision.ScheduleDecision]>

const jitters: ReadonlyArray<Jitter> = ["none", "full", "equal", "decorrelated", "proportional"]

const alwaysRetry = (_: unknown) => true

const timingOnly = new Unavailable({ reason: "Backoff.delays" })

const resolve = <E>(policy: Policy<E>): Resolved<E> => {
  const base = Duration.decode(policy.base)
  const max = Duration.decode(policy.max)
  const factor = policy.factor ?? 2
  const jitter = policy.jitter ?? "full"
  const maxAttempts = policy.maxAttempts ?? Number.POSITIVE_INFINITY
  Validation.assertValid("Backoff.exponential", [
    ["base", base, Validation.isPositiveFinite(base), "a finite duration > 0"],
    ["factor", factor, Number.isFinite(factor) && factor >= 1, "a number ≥ 1"],
    ["max", max, Duration.isFinite(max) && !Duration.lessThan(max, base), "a finite duration ≥ base"],
    ["jitter", jitter, jitters.includes(jitter), `one of ${jitters.join(", ")}`],
    ["maxAttempts", maxAttempts, policy.maxAttempts === undefined || Validation.isIntegerFrom(maxAttempts, 1), Validation.integerFrom(1)]
  ])
  return {
    baseMillis: Duration.toMillis(base),
    factor,
    maxMillis: Duration.toMillis(max),
    jitter,
    maxAttempts,
    maxElapsedMillis: policy.maxElapsed === undefined
      ? Number.POSITIVE_INFINITY
      : Duration.toMillis(Duration.decode(policy.maxElapsed)),
    retryOn: policy.retryOn ?? isRetryable
  }
}

const initialState = <E>(policy: Resolved<E>): State => ({
  retries: 0,
  previousDelayMillis: policy.baseMillis,
  startedAt: undefined
})

const retryAfterMillis = (input: unknown): number =>
  Predicate.hasProperty(input, "retryAfter") && Duration.isDuration(input.retryAfter)
    ? Duration.toMillis(input.retryAfter)
    : 0

const stepOf = <E>(policy: Resolved<E>): Step<E> => {
  const { baseMillis, factor, jitter, maxAttempts, maxElapsedMillis, maxMillis, retryOn } = policy
  const ceiling = (retries: number) => Math.min(maxMillis, baseMillis * Math.pow(factor, retries))

  const draw = (state: State): Effect.Effect<number> => {
    const expo = ceiling(state.retries)
    switch (jitter) {
      case "none":
        return Effect.succeed(expo)
      case "full":
        return Random.nextRange(0, expo)
      case "equal":
        return Effect.map(Random.nextRange(0, expo / 2), (extra) => expo / 2 + extra)
      case "decorrelated":
        return Effect.map(
          Random.nextRange(baseMillis, state.previousDelayMillis * 3),
          (delay) => Math.min(maxMillis, delay)
        )
      case "proportional":
        return Effect.map(Random.nextRange(0.8, 1.2), (scale) => Math.min(maxMillis, expo * scale))
    }
  }

  return (now, input, state) => {
    const startedAt = state.startedAt ?? now
    const stop = Effect.succeed([{ ...state, startedAt }, Duration.zero, ScheduleDecision.done] as const)
    if (!retryOn(input) || state.retries + 1 >= maxAttempts) return stop
    return Effect.flatMap(draw(state), (drawnMillis) => {
      const serverMillis = retryAfterMillis(input)
      if (serverMillis > maxMillis) return stop
      // Rounded to whole nanoseconds, as a Duration is, so that what is waited is exactly what is output.
      const delay = Duration.millis(Math.max(drawnMillis, serverMillis))
      const delayMillis = Duration.toMillis(delay)
      if (now - startedAt + delayMillis > maxElapsedMillis) return stop
      const next: State = { retries: state.retries + 1, previousDelayMillis: delayMillis, startedAt }
      return Effect.succeed([next, delay, ScheduleDecision.continueWith(ScheduleInterval.after(now + delayMillis))] as const)
    })
  }
}

const list = <E>(policy: Resolved<E>, count: number, failure: E): Effect.Effect<ReadonlyArray<Duration.Duration>> =>
  Effect.gen(function*() {
    const step = stepOf(policy)
    const listed: Array<Duration.Duration> = []
    let state = initialState(policy)
    let now = 0
    while (listed.length < count) {
      const [next, delay, decision] = yield* step(now, failure, state)
      if (ScheduleDecision.isDone(decision)) break
      listed.push(delay)
      state = next
      now += Duration.toMillis(delay)
    }
    return listed
  })
