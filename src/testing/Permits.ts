/**
 * Permits — "every permit taken is given back", checked.
 *
 * A limit that loses a permit to an interruption at the wrong moment does not fail: it just admits one
 * call fewer from then on, until the service stalls under load. Tests catch that by reading, once the work
 * is over, how many permits are still out. A `PermitProbe` reads that number for one limit:
 *
 * - `semaphore(name, semaphore, total)`: an Effect `Semaphore` of `total` permits. The semaphore does not
 *   say how many are free, so the probe finds out by a binary search with `withPermitsIfAvailable`, which
 *   takes the permits and gives them back at once (nobody waits longer for it).
 * - `concurrencyLimit(name)`: the calls holding a permit of Keel's `concurrencyLimit` named `name`, read
 *   from its in-flight gauge.
 * - `rateLimitWaiting(name)`: the callers still waiting for a slot at Keel's `rateLimit` named `name`
 *   (a rate limit's spent tokens come back with time, so what can be stuck there is a waiter).
 *
 * `expectReturned(probes)` fails with one `PermitLeak` naming every probe that reads more than zero.
 * The metric probes read process-wide gauges: give each limit under test its own `name`.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import { concurrencyLimitMetrics } from "../middleware/concurrencyLimit.js"
import { rateLimitMetrics } from "../middleware/rateLimit.js"
import * as Validation from "../internal/Validation.js"

/** Reads how many permits (or waiting callers) of one limit are outstanding now. */
export interface PermitProbe {
  /**
   * Names the limit in a `PermitLeak`: the name given to `semaphore`, `concurrencyLimit <name>` or
   * `rateLimit <name> (waiting callers)`.
   */
  readonly name: string
  /**
   * Reads the count afresh each time it runs: permits taken (`semaphore`), calls holding a permit
   * (`concurrencyLimit`) or callers waiting (`rateLimitWaiting`).
   */
  readonly outstanding: Effect.Effect<number>
}

/** A probe that read more than zero. */
export interface OutstandingPermits {
  /** The probe's `name`. */
  readonly name: string
  /** What it read: permits (or waiting callers) still out, more than zero. */
  readonly outstanding: number
}

/** Permits (or waiting callers) were still outstanding when everything should have been given back. */
export class PermitLeak extends Data.TaggedError("PermitLeak")<{
  /** Every probe that read more than zero, in the order the probes were given. */
  readonly leaks: ReadonlyArray<OutstandingPermits>
}> {
  /** Reads `permits not returned: concurrencyLimit db has 1 outstanding; pool has 2 outstanding`. */
  override get message() {
    const listed = this.leaks.map((leak) => `${leak.name} has ${leak.outstanding} outstanding`)
    return `permits not returned: ${listed.join("; ")}`
  }
}

/**
 * The permits of `semaphore` (created with `total`) that are taken now. The search takes at most
 * log2(total) + 2 tries, each taking and returning the permits it asks for in one step. A `total` that is
 * not an integer ≥ 0 makes the probe's `outstanding` die.
 */
export const semaphore = (name: string, semaphore: Effect.Semaphore, total: number): PermitProbe => {
  const availableNow = (permits: number) =>
    Effect.map(semaphore.withPermitsIfAvailable(permits)(Effect.void), Option.isSome)
  const outstanding = Effect.gen(function*() {
    yield* Validation.validate(`Permits.semaphore ${name}`, [
      ["total", total, Validation.isIntegerFrom(total, 0), Validation.integerFrom(0)]
    ])
    if (!(yield* availableNow(0))) return total
    // Invariant: `low` permits are available, `high + 1` are not (or exceed the total).
    let low = 0
    let high = total
    while (low < high) {
      const middle = Math.ceil((low + high) / 2)
      if (yield* availableNow(middle)) low = middle
      else high = middle - 1
    }
    return total - low
  })
  return { name, outstanding }
}

/**
 * The calls holding a permit of the Keel concurrency limit named `name` (its `name` option), read from the
 * process-wide in-flight gauge.
 */
export const concurrencyLimit = (name: string): PermitProbe => ({
  name: `concurrencyLimit ${name}`,
  outstanding: Effect.map(Metric.value(concurrencyLimitMetrics(name).inFlight), (state) => state.value)
})

/**
 * The callers waiting for a slot at the Keel rate limit named `name` (its `name` option), read from the
 * process-wide waiting gauge.
 */
export const rateLimitWaiting = (name: string): PermitProbe => ({
  name: `rateLimit ${name} (waiting callers)`,
  outstanding: Effect.map(Metric.value(rateLimitMetrics(name).waiting), (state) => state.value)
})

/**
 * Reads every probe once, in order, and fails with `PermitLeak` naming every probe that reads more than zero.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 * import { Permits } from "keel/testing"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const limit = yield* Middleware.concurrencyLimit({ max: 2, name: "db" })
 *   const query = limit((sql: string) => Effect.succeed(sql))
 *   yield* Effect.all([query("a"), query("b"), query("c")], { concurrency: "unbounded" })
 *   // Fails with PermitLeak if any call kept its permit.
 *   yield* Permits.expectReturned([Permits.concurrencyLimit("db")])
 * }))
 * ```
 */
export const expectReturned = (probes: Iterable<PermitProbe>): Effect.Effect<void, PermitLeak> =>
  Effect.gen(function*() {
    const leaks: Array<OutstandingPermits> = []
    for (const probe of probes) {
      const outstanding = yield* probe.outstanding
      if (outstanding > 0) leaks.push({ name: probe.name, outstanding })
    }
    if (leaks.length > 0) return yield* Effect.fail(new PermitLeak({ leaks }))
  })
