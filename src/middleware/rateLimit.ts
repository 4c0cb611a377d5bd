/**
 * rateLimit — at most `limit` calls in any window of length `per`, waiting for a slot (the default) or
 * refusing at once with `RateLimited { retryAfter }`; optionally one limit per key (client, tenant, …).
 *
 * The promise is exact: no window of length `per`, wherever it starts, admits more than `limit` calls.
 * A continuously refilling token bucket (Tower's RateLimit, Effect's RateLimiter) does not keep it: a full
 * bucket spent at the end of one window and refilled during the next admits up to 2·limit−1 calls in one
 * window. Here each of the `limit` tokens comes back exactly `per` after it was spent — a sliding log of
 * the last `limit` admission instants (GCRA with burst = limit): a call is admitted at `now` unless the
 * `limit`-th latest admission is less than `per` ago, and `retryAfter` is the time until it is not.
 *
 * In wait mode a caller reserves its slot when it arrives — the earliest instant that keeps the window
 * promise after every earlier admission and reservation, so callers are admitted in arrival order — and
 * sleeps until then. A caller interrupted while it waits gives its slot back: its reservation leaves the
 * log and the reservations behind it move earlier (they never move later), so no one waits for a slot
 * nobody used. A call counts as admitted once it starts; interrupting it after that does not return the
 * token, which comes back `per` after it was spent like any other. At most `maxWaiting` callers wait; past
 * that, under `loadShed()`, or when the slot lies at or past the caller's deadline, the call fails at once
 * with `RateLimited`: a refusal by a rate limit is a "slow down, retry after", whatever made it immediate.
 * Admission instants are the reserved slots; on a real clock a sleeper wakes a little after its slot.
 *
 * With `key`, every key has its own log. Memory stays bounded: a log keeps at most `limit` instants plus
 * its waiters, at most `maxKeys` keys are remembered, and past that the least recently used key without
 * waiters is forgotten. The trade-off: a forgotten key starts fresh, so a client whose key was evicted can
 * get a new burst of `limit` calls sooner than `per` after its last one. Size `maxKeys` above the number of
 * clients active within one `per`.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { RateLimited } from "../Errors.js"
import { currentDeadline } from "../internal/deadline.js"
import * as MetricSeries from "../internal/MetricSeries.js"
import * as Instruments from "../internal/middlewareInstruments.js"
import { event } from "../internal/tracing.js"
import { clockOf } from "../internal/fiberClock.js"
import * as Validation from "../internal/Validation.js"
import { takeShedding, withShedding } from "../internal/shedding.js"
import type { Middleware, Service } from "./Middleware.js"

/**
 * How `rateLimit` limits. Invalid values (a count that is not an integer in range, a `per` that is not a
 * positive finite duration) are a defect (`IllegalArgumentException`) when the limit is built.
 *
 * @typeParam Req - The request `key` reads its key from.
 */
export interface RateLimitOptions<Req = unknown> {
  /** Calls admitted in any window of length `per`: an integer ≥ 1. */
  readonly limit: number
  /** The window's length, e.g. `"1 second"`: a positive, finite duration. */
  readonly per: Duration.DurationInput
  /** `wait` (default): sleep until a slot is free; `reject`: fail at once with `RateLimited`. */
  readonly onLimit?: "wait" | "reject"
  /** In wait mode, callers allowed to wait at once (over all keys); past it `RateLimited`. Default 1000. */
  readonly maxWaiting?: number
  /** One limit per key of the request; without it, one limit for all calls. */
  readonly key?: (request: Req) => string
  /** Keys remembered at once; past it the least recently used idle key is forgotten. Default 10 000. */
  readonly maxKeys?: number
  /** Names the limit in metrics (`middleware=<name>`). Default `rate-limit`. */
  readonly name?: string
}

/** Why a call was refused, as the `reason` tag of the rejections counter. */
export type RateLimitRejection = "rate-limited" | "queue-full" | "shed" | "deadline"

/** `keel_rate_limit_keys`: keys a rate limit remembers, by `middleware`. */
const keysGauge = Metric.gauge("keel_rate_limit_keys", { description: "keys a rate limit remembers" })

/** The metric series of one rate limit, as `rateLimitMetrics` returns them. */
export interface RateLimitMetrics {
  /** Calls waiting for their slot. */
  readonly waiting: Metric.Metric.Gauge<number>
  /** Keys the limit remembers. */
  readonly keys: Metric.Metric.Gauge<number>
  /** Calls refused, by reason. */
  readonly rejections: (reason: RateLimitRejection) => Metric.Metric.Counter<number>
}

/** The metrics of the rate limit named `name`, to read or export them. */
export const rateLimitMetrics = (name: string): RateLimitMetrics => {
  const series = MetricSeries.series("middleware", name)
  return {
    waiting: series.of(Instruments.waiting),
    keys: series.of(keysGauge),
    rejections: (reason) => series.of(Instruments.rejections, { reason })
  }
}

/** A waiting caller's slot. `at` only ever moves earlier (when a caller ahead gives its slot back). */
interface Reservation {
  at: number
  /** Its call has started: the slot is spent and can no longer be given back. */
  started: boolean
  /** Counted in `waiting` (its slot is still in the future). */
  waiting: boolean
  /** Completed (and replaced) when `at` moves earlier, to wake the sleeper. */
  moved: Deferred.Deferred<void>
}

/**
 * One key's log: the spent slots (`spent[head..]`, oldest first; only the last `limit`, and only those
 * less than `per` ago, can still hold a slot back), then the reservations in arrival order. Together they
 * are sorted by instant.
 */
interface Log {
  spent: Array<number>
  head: number
  reserved: Array<Reservation>
  /** Completed (and replaced) whenever a reservation starts or leaves: the next in line may start. */
  turn: Deferred.Deferred<void>
}

const newLog = (): Log => ({ spent: [], head: 0, reserved: [], turn: Deferred.unsafeMake(FiberId.none) })

type Decision =
  | { readonly _tag: "Admitted" }
  | { readonly _tag: "Refused"; readonly reason: RateLimitRejection; readonly retryAfterMillis: number }
  | { readonly _tag: "Reserved"; readonly log: Log; readonly reservation: Reservation }

const admitted: Decision = { _tag: "Admitted" }

/** For reservations whose call has started: their slot never moves again. */
const neverMoves = Deferred.unsafeMake<void>(FiberId.none)

/**
 * Builds a rate limit; one log (or one per key) shared by every service it wraps, living as long as the
 * Scope. Without `key` it wraps any service; with `key` it keeps one log per key, read from each request,
 * so it wraps (and, in a `stack`, makes the whole stack need) services whose requests are `Req`. At most
 * `maxKeys` keys are remembered; past that the least recently used key without waiters is forgotten. A
 * refused call fails with `RateLimited { retryAfter }`: at once in `reject` mode, and in `wait` mode when
 * `maxWaiting` callers already wait, under `loadShed()`, or when the slot lies at or past the caller's
 * deadline. Dies with `IllegalArgumentException` naming an invalid option.
 *
 * @typeParam Req - The request `key` reads the key from; `unknown` without `key`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const send = (message: string) => Effect.log(`sent ${message}`)
 *
 * const program = Effect.gen(function*() {
 *   const limit = yield* Middleware.rateLimit({ limit: 2, per: "1 second", onLimit: "reject" })
 *   const limited = limit(send)
 *   // The third call within the second fails with RateLimited.
 *   return yield* Effect.forEach(["a", "b", "c"], (message) => Effect.either(limited(message)))
 * }).pipe(Effect.scoped)
 * ```
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * interface Call { readonly tenant: string; readonly query: string }
 * const search = (call: Call) => Effect.succeed([`${call.tenant}: ${call.query}`])
 *
 * const program = Effect.gen(function*() {
 *   const perTenant = yield* Middleware.rateLimit({ limit: 10, per: "1 second", key: (call: Call) => call.tenant })
 *   return yield* perTenant(search)({ tenant: "acme", query: "gpu" })
 * }).pipe(Effect.scoped)
 * ```
 */
export const rateLimit = <Req = unknown>(
  options: RateLimitOptions<Req>
): Effect.Effect<Middleware<RateLimited, never, Req>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const limit = options.limit
    const perMillis = Duration.toMillis(Duration.decode(options.per))
    const maxWaiting = options.maxWaiting ?? 1000
    const maxKeys = options.maxKeys ?? 10_000
    yield* Validation.validate("Middleware.rateLimit", [
      ["limit", limit, Validation.isIntegerFrom(limit, 1), Validation.integerFrom(1)],
      ["per", Duration.decode(options.per), Validation.isPositiveFinite(Duration.decode(options.per)), "a finite duration > 0"],
      ["maxWaiting", maxWaiting, Validation.isIntegerFrom(maxWaiting, 0), Validation.integerFrom(0)],
      ["maxKeys", maxKeys, Validation.isIntegerFrom(maxKeys, 1), Validation.integerFrom(1)]
    ])
    const waitForSlot = (options.onLimit ?? "wait") === "wait"
    const keyOf = options.key
    const series = MetricSeries.series("middleware", options.name ?? "rate-limit")
    const tags = series.labels
    const rejectionTag = (reason: RateLimitRejection) => series.labelsWith({ reason })
    const rejectionTags: Record<RateLimitRejection, ReadonlyArray<MetricLabel.MetricLabel>> = {
      "rate-limited": rejectionTag("rate-limited"),
      "queue-full": rejectionTag("queue-full"),
      "shed": rejectionTag("shed"),
      "deadline": rejectionTag("deadline")
    }

    const shared = newLog()
    // Map iteration follows insertion order; a key is re-inserted when used (unless it is the last inserted
    // already), so the first is the least recently used.
    const logs = new Map<string, Log>()
    let waiting = 0

    const report = () => {
      Instruments.waiting.unsafeUpdate(waiting, tags)
      keysGauge.unsafeUpdate(logs.size, tags)
    }
    report()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        logs.clear()
        Instruments.waiting.unsafeUpdate(0, tags)
        keysGauge.unsafeUpdate(0, tags)
      })
    )

    // The key inserted last, which is already where a use would move it.
    let newestKey: string | undefined
    const logFor = (request: Req): Log => {
      if (keyOf === undefined) return shared
      const key = keyOf(request)
      const known = logs.get(key)
      if (known !== undefined) {
        if (key !== newestKey) {
          logs.delete(key)
          logs.set(key, known)
          newestKey = key
        }
        return known
      }
      const fresh = newLog()
      logs.set(key, fresh)
      newestKey = key
      if (logs.size > maxKeys) evictOneBesides(key)
      report()
      return fresh
    }

    const evictOneBesides = (newest: string) => {
      let victim: string | undefined
      for (const [key, log] of logs) {
        if (key === newest) continue
        victim ??= key
        if (log.reserved.length === 0) {
          victim = key
          break
        }
      }
      // Only when every key has waiters is one of them forgotten; its waiters still get their slots.
      if (victim !== undefined) logs.delete(victim)
    }

    const forgetOld = (log: Log, now: number) => {
      const spent = log.spent
      while (
        log.head < spent.length && (spent.length - log.head > limit || spent[log.head]! <= now - perMillis)
      ) log.head++
      if (log.head === spent.length) {
        log.spent = []
        log.head = 0
      } else if (log.head >= 64 && log.head * 2 >= spent.length) {
        log.spent = spent.slice(log.head)
        log.head = 0
      }
    }

    // The instant `limit` places before the reservation at `index` (spent slots first); undefined when
    // there is none that can still hold it back.
    const tokenHolder = (log: Log, index: number): number | undefined => {
      const before = index - limit
      if (before >= 0) return log.reserved[before]!.at
      const position = log.spent.length + before
      return position >= log.head ? log.spent[position] : undefined
    }

    // The earliest slot for the reservation at `index`: not before now, and `per` after the token it takes
    // was spent. Slots never decrease along the log (each token holder is later than the one before), so
    // callers are admitted in arrival order.
    const earliestSlot = (log: Log, index: number, now: number) => {
      const holder = tokenHolder(log, index)
      return holder === undefined ? now : Math.max(now, holder + perMillis)
    }

    const stopWaiting = (reservation: Reservation) => {
      if (reservation.waiting) {
        reservation.waiting = false
        waiting--
      }
    }

    // Reservations whose slot has come are no longer waiting, even before their sleeper wakes.
    const countDue = (log: Log, now: number) => {
      for (const reservation of log.reserved) {
        if (reservation.at > now) break
        stopWaiting(reservation)
      }
    }

    const moveStartedToSpent = (log: Log) => {
      while (log.reserved.length > 0 && log.reserved[0]!.started) log.spent.push(log.reserved.shift()!.at)
    }

    const decide = (request: Req, now: number, shed: boolean, deadline: Option.Option<number>): Decision => {
      const log = logFor(request)
      forgetOld(log, now)
      countDue(log, now)
      const slot = earliestSlot(log, log.reserved.length, now)
      if (slot <= now) {
        if (log.reserved.length === 0) log.spent.push(now)
        else log.reserved.push({ at: now, started: true, waiting: false, moved: neverMoves })
        return admitted
      }
      const retryAfterMillis = slot - now
      const refused = (reason: RateLimitRejection): Decision => ({ _tag: "Refused", reason, retryAfterMillis })
      if (!waitForSlot) return refused("rate-limited")
      if (shed) return refused("shed")
      if (Option.isSome(deadline) && slot >= deadline.value) return refused("deadline")
      if (waiting >= maxWaiting) return refused("queue-full")
      const reservation: Reservation = {
        at: slot,
        started: false,
        waiting: true,
        moved: Deferred.unsafeMake(FiberId.none)
      }
      log.reserved.push(reservation)
      waiting++
      report()
      return { _tag: "Reserved", log, reservation }
    }

    // The reservations behind may be next in line now.
    const passTurn = (log: Log) => {
      const turn = log.turn
      log.turn = Deferred.unsafeMake(FiberId.none)
      Deferred.unsafeDone(turn, Exit.void)
    }

    const start = (log: Log, reservation: Reservation) => {
      reservation.started = true
      stopWaiting(reservation)
      moveStartedToSpent(log)
      passTurn(log)
      report()
    }

    // The caller gave up its slot: drop it and let everyone behind move up to the earliest slot they may
    // now have.
    const giveBack = (log: Log, reservation: Reservation, now: number) => {
      const index = log.reserved.indexOf(reservation)
      if (index < 0) return
      log.reserved.splice(index, 1)
      stopWaiting(reservation)
      for (let behind = index; behind < log.reserved.length; behind++) {
        const later = log.reserved[behind]!
        if (later.started) continue
        const at = earliestSlot(log, behind, now)
        if (at < later.at) {
          later.at = at
          const moved = later.moved
          later.moved = Deferred.unsafeMake(FiberId.none)
          Deferred.unsafeDone(moved, Exit.void)
        }
      }
      moveStartedToSpent(log)
      passTurn(log)
      report()
    }

    // Several reservations can share a slot, and sleepers due at the same instant wake in no set order: a
    // reservation starts only once every reservation ahead of it has started (or left), so calls are
    // admitted in arrival order even then.
    const awaitTurn = (log: Log, reservation: Reservation): Effect.Effect<void> =>
      Effect.suspend(() =>
        log.reserved.find((ahead) => !ahead.started) === reservation
          ? Effect.void
          : Effect.zipRight(Deferred.await(log.turn), awaitTurn(log, reservation))
      )

    const sleepUntilSlot = (reservation: Reservation): Effect.Effect<void> =>
      Effect.clockWith((clock) => {
        const left = reservation.at - clock.unsafeCurrentTimeMillis()
        if (left <= 0) return Effect.void
        return Effect.zipRight(
          Effect.race(Effect.sleep(Duration.millis(left)), Deferred.await(reservation.moved)),
          sleepUntilSlot(reservation)
        )
      })

    // Deciding is synchronous; only a caller that has to wait runs in a masked region (to give back its
    // reservation if interrupted while waiting), so an admitted call costs no more than the decision.
    // `shedding`: the twin loadShed() uses, refusing where it would wait. A waiting limit takes a pending
    // shedding request from fiber context as well; a refusing one never waits and leaves it to those below.
    const limited = <R extends Req, Res, E, Rq>(
      shedding: boolean,
      service: Service<R, Res, E, Rq>,
      request: R
    ): Effect.Effect<Res, E | RateLimited, Rq> =>
      Effect.withFiberRuntime((fiber): Effect.Effect<Res, E | RateLimited, Rq> => {
        const shed = waitForSlot && (takeShedding(fiber) || shedding)
        const clock = clockOf(fiber)
        const decision = decide(request, clock.unsafeCurrentTimeMillis(), shed, fiber.getFiberRef(currentDeadline))
        switch (decision._tag) {
          case "Admitted":
            return service(request)
          case "Refused":
            Instruments.rejections.unsafeUpdate(1, rejectionTags[decision.reason])
            event(fiber, "keel.rate_limited", {
              "keel.rejection.reason": decision.reason,
              "keel.retry_after_ms": decision.retryAfterMillis
            })
            return Effect.fail(new RateLimited({ retryAfter: Duration.millis(decision.retryAfterMillis) }))
          case "Reserved": {
            const { log, reservation } = decision
            return Effect.uninterruptibleMask((restore) =>
              restore(Effect.zipRight(sleepUntilSlot(reservation), awaitTurn(log, reservation))).pipe(
                Effect.onInterrupt(() =>
                  Effect.clockWith((clock) =>
                    Effect.sync(() => giveBack(log, reservation, clock.unsafeCurrentTimeMillis()))
                  )
                ),
                Effect.zipRight(Effect.sync(() => start(log, reservation))),
                Effect.zipRight(restore(Effect.suspend(() => service(request))))
              )
            )
          }
        }
      })

    return <R extends Req, Res, E, Rq>(service: Service<R, Res, E, Rq>): Service<R, Res, E | RateLimited, Rq> => {
      const limitedService: Service<R, Res, E | RateLimited, Rq> = (request) => limited(false, service, request)
      // A refusing limit never waits: loadShed() passes through it to the limit below.
      if (!waitForSlot) return limitedService
      return withShedding(limitedService, (request) => limited(true, service, request))
    }
  })

