/**
 * hedge — Tower's Hedge: when a call is slow, ask again instead of waiting on the slowest server.
 *
 * The first attempt starts at once; while no attempt has succeeded and at least one is still running,
 * attempt k+1 starts k·delay after the call began, up to `maxAttempts` in all. The first success wins: the
 * other attempts are interrupted and awaited (their finalizers have run when the call returns). A failed
 * attempt (a typed failure or a defect) does not end the call while others run, and starts nothing new —
 * hedging is about latency, retrying failures is `retry`'s job — so the call fails only once every started
 * attempt has failed, with the last failure. No hedge starts once the caller's deadline (`deadline.ts`) has
 * passed.
 *
 * The delay is fixed, or a percentile of recent latencies (Tower's choice: p95 hedges 5 % of calls). The
 * latency recorded is the first attempt's: its duration when it succeeds, and when a hedge wins, the time
 * it had run by then (a failed first attempt records nothing). That second value is only a lower bound,
 * but it lies above the delay, so the count of latencies below the delay — hence the percentile — is not
 * dragged down by the calls hedging made fast.
 * Until `minSamples` latencies are known a call is not hedged, or is hedged after `fallback` if given.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as MetricSeries from "../internal/MetricSeries.js"
import * as Validation from "../internal/Validation.js"
import { remaining } from "./deadline.js"
import type { Middleware, Service } from "./Middleware.js"

/** Hedge after the latency below which `percentile` of the latest `window` first attempts ended. */
export interface HedgeLatencyPercentile {
  /** In [0, 1]: 0.95 hedges the slowest 5 % of calls. */
  readonly percentile: number
  /** Latencies needed before the percentile is trusted. Default 20, at most `window`. */
  readonly minSamples?: number
  /** How many of the latest latencies are kept. Default 1000. */
  readonly window?: number
  /** The delay while fewer than `minSamples` latencies are known; without it, such calls are not hedged. */
  readonly fallback?: Duration.DurationInput
}

/** How `hedge` hedges. Invalid values are a defect when the middleware is built. */
export interface HedgeOptions {
  /**
   * When to start each further attempt: a fixed delay (finite; attempt k+1 starts k·delay after the call
   * began), or a latency percentile that sets the delay from recent calls.
   */
  readonly after: Duration.DurationInput | HedgeLatencyPercentile
  /** Attempts per call, the first included: an integer ≥ 1 (1 never hedges). Default 2. */
  readonly maxAttempts?: number
  /** Tags the metrics (`middleware=<name>`). Default `"hedge"`. */
  readonly name?: string
}

const hedgeInstruments = {
  hedges: Metric.counter("keel_hedge_attempts_total", {
    description: "hedged attempts started (beyond each call's first)",
    incremental: true
  }),
  wins: Metric.counter("keel_hedge_wins_total", {
    description: "calls answered by a hedged attempt rather than the first",
    incremental: true
  }),
  delay: Metric.gauge("keel_hedge_delay_milliseconds", { description: "the percentile delay now in force" })
}

/** The metric series of one hedge middleware, as `hedgeMetrics` returns them. */
export interface HedgeMetrics {
  /** `keel_hedge_attempts_total`: hedged attempts started (beyond each call's first). */
  readonly hedges: Metric.Metric.Counter<number>
  /** `keel_hedge_wins_total`: calls answered by a hedged attempt rather than the first. */
  readonly wins: Metric.Metric.Counter<number>
  /** `keel_hedge_delay_milliseconds`: the percentile delay now in force, in ms (never set for a fixed delay). */
  readonly delay: Metric.Metric.Gauge<number>
}

/** The metrics of the hedge middleware named `name` (tagged `middleware=<name>`), to read or export them. */
export const hedgeMetrics = (name: string): HedgeMetrics => {
  const series = MetricSeries.series("middleware", name)
  return {
    hedges: series.of(hedgeInstruments.hedges),
    wins: series.of(hedgeInstruments.wins),
    delay: series.of(hedgeInstruments.delay)
  }
}

/**
 * The hedge middleware. With a percentile it keeps the latest latencies, shared by every call through it,
 * so, like every stateful middleware, it is built in a Scope; a fixed delay keeps no state. Invalid options
 * are a defect.
 *
 * It adds no error of its own: the call fails only once every attempt it started has failed, with the last
 * failure. Hedge only calls that are safe to make twice (reads, idempotent writes).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const read = (key: string) => Effect.as(Effect.sleep("20 millis"), `value of ${key}`)
 *
 * const program = Effect.gen(function*() {
 *   // A second attempt when the first has not answered within the p95 of recent latencies.
 *   const hedge = yield* Middleware.hedge({ after: { percentile: 0.95, fallback: "100 millis" } })
 *   return yield* hedge(read)("user:1")
 * }).pipe(Effect.scoped)
 * ```
 */
export const hedge = (options: HedgeOptions): Effect.Effect<Middleware<never>, never, Scope.Scope> =>
  Effect.suspend(() => {
    const maxAttempts = options.maxAttempts ?? 2
    Validation.assertValid("Middleware.hedge", [
      ["maxAttempts", maxAttempts, Validation.isIntegerFrom(maxAttempts, 1), Validation.integerFrom(1)]
    ])
    const tags = MetricSeries.series("middleware", options.name ?? "hedge").labels
    const delays = delaySource(options.after, (millis) => hedgeInstruments.delay.unsafeUpdate(millis, tags))

    const middleware = <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E, R> => (request) =>
      Effect.clockWith((clock) =>
        Effect.suspend(() => {
          const delayMillis = delays.delayMillis()
          const startedAt = clock.unsafeCurrentTimeMillis()
          const attempt = Effect.suspend(() => service(request))
          if (delayMillis === undefined || maxAttempts === 1) {
            return Effect.tap(attempt, () => delays.record(clock.unsafeCurrentTimeMillis() - startedAt))
          }
          return Effect.uninterruptibleMask((restore) =>
            Effect.gen(function*() {
              const outcome = yield* Deferred.make<Res, E>()
              const attemptFibers: Array<Fiber.RuntimeFiber<boolean>> = []
              let running = 0
              let firstRunning = true

              const settle = (index: number, exit: Exit.Exit<Res, E>): Effect.Effect<boolean> => {
                running--
                if (index === 0) firstRunning = false
                if (Exit.isSuccess(exit)) {
                  return Effect.tap(Deferred.succeed(outcome, exit.value), (won) => {
                    if (!won) return
                    if (index > 0) hedgeInstruments.wins.unsafeUpdate(1, tags)
                    if (index === 0 || firstRunning) delays.record(clock.unsafeCurrentTimeMillis() - startedAt)
                  })
                }
                if (Cause.isInterruptedOnly(exit.cause) || running > 0) return Effect.succeed(false)
                return Deferred.failCause(outcome, exit.cause)
              }

              // Forked uninterruptible (inherited from the mask): only the service call can be interrupted, so
              // every attempt started is counted in `running` and settled.
              const launch = (index: number) =>
                Effect.suspend(() => {
                  running++
                  if (index > 0) hedgeInstruments.hedges.unsafeUpdate(1, tags)
                  return Effect.fork(
                    Effect.flatMap(Effect.exit(Effect.interruptible(attempt)), (exit) => settle(index, exit))
                  )
                }).pipe(Effect.map((fiber) => attemptFibers.push(fiber)))

              // Attempts are forked by the call's own fiber (a child fiber is interrupted when its parent ends),
              // which waits for the outcome up to each hedge's start.
              yield* launch(0)
              return yield* Effect.gen(function*() {
                for (let index = 1; index < maxAttempts; index++) {
                  const settled = yield* restore(
                    Effect.timeoutOption(Effect.exit(Deferred.await(outcome)), Duration.millis(delayMillis))
                  )
                  if (Option.isSome(settled)) return yield* settled.value
                  const left = yield* remaining
                  if (Option.isSome(left) && Duration.toMillis(left.value) <= 0) break
                  yield* launch(index)
                }
                return yield* restore(Deferred.await(outcome))
              }).pipe(Effect.ensuring(Effect.suspend(() => Fiber.interruptAll(attemptFibers))))
            })
          )
        })
      )
    return Effect.succeed(middleware as Middleware<never>)
  })

// ---------------------------------------------------------------------------------------------------------

/** A delay option in ms (an invalid one throws `IllegalArgumentException`, a defect of `hedge`). */
const decodeDelay = (input: Duration.DurationInput, what: string): number => {
  const duration = Validation.tryDuration(input)
  Validation.assertValid("Middleware.hedge", [
    [what, duration ?? input, duration !== undefined && Duration.isFinite(duration), "a finite duration"]
  ])
  return Duration.toMillis(duration!)
}

interface DelaySource {
  /** The hedge delay for a call starting now; undefined: do not hedge it. */
  readonly delayMillis: () => number | undefined
  readonly record: (latencyMillis: number) => void
}

const isPercentile = (after: HedgeOptions["after"]): after is HedgeLatencyPercentile =>
  typeof after === "object" && after !== null && "percentile" in after

const delaySource = (after: HedgeOptions["after"], report: (delayMillis: number) => void): DelaySource => {
  if (!isPercentile(after)) {
    const fixed = decodeDelay(after, "after")
    return { delayMillis: () => fixed, record: () => {} }
  }
  const { percentile } = after
  const window = after.window ?? 1000
  const minSamples = after.minSamples ?? Math.min(20, window)
  Validation.assertValid("Middleware.hedge", [
    ["after.percentile", percentile, Validation.isRate(percentile), "in [0, 1]"],
    ["after.window", window, Validation.isIntegerFrom(window, 1), Validation.integerFrom(1)],
    ["after.minSamples", minSamples, Validation.isIntegerFrom(minSamples, 1) && minSamples <= window, "an integer in [1, window]"]
  ])
  const fallback = after.fallback === undefined ? undefined : decodeDelay(after.fallback, "after.fallback")
  const latencies = new LatencyWindow(window)
  let current: number | undefined
  return {
    delayMillis: () => current ?? fallback,
    record: (latencyMillis) => {
      latencies.add(latencyMillis)
      if (latencies.size < minSamples) return
      current = latencies.percentile(percentile)
      report(current)
    }
  }
}

/**
 * The latest `capacity` values in arrival order (a ring) and in sorted order, so that adding is a binary
 * search and two splices and a percentile is one read.
 */
class LatencyWindow {
  private readonly ring: Array<number> = []
  private oldest = 0
  private readonly sorted: Array<number> = []
  private readonly capacity: number

  constructor(capacity: number) {
    this.capacity = capacity
  }

  get size(): number {
    return this.sorted.length
  }

  add(value: number): void {
    if (this.ring.length < this.capacity) {
      this.ring.push(value)
    } else {
      this.sorted.splice(this.lowerBound(this.ring[this.oldest]!), 1)
      this.ring[this.oldest] = value
      this.oldest = (this.oldest + 1) % this.capacity
    }
    this.sorted.splice(this.lowerBound(value), 0, value)
  }

  /** Nearest rank: the smallest value with at least `fraction` of the values at or below it. */
  percentile(fraction: number): number {
    const rank = Math.ceil(fraction * this.sorted.length)
    return this.sorted[Math.min(this.sorted.length - 1, Math.max(0, rank - 1))]!
  }

  private lowerBound(value: number): number {
    let low = 0
    let high = this.sorted.length
    while (low < high) {
      const middle = (low + high) >>> 1
      if (this.sorted[middle]! < value) low = middle + 1
      else high = middle
    }
    return low
  }
}
