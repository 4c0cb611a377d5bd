/**
 * Permits: the probes read what is really outstanding — a semaphore's taken permits (found without
 * disturbing its holders or waiters), the calls holding a permit of a Keel concurrency limit, the callers
 * waiting at a Keel rate limit — and read 0 once the work is over; `expectReturned` names every probe
 * that does not. The limits here use names of their own: their gauges are process-wide.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, FastCheck as fc, Fiber, Option, TestClock } from "effect"
import { Middleware } from "keel"
import * as Permits from "../../../src/testing/Permits.js"
import * as PropertyRuns from "../../../src/testing/PropertyRuns.js"
import { finished, settle } from "../middleware/timing.js"

const { concurrencyLimit, rateLimit } = Middleware

const leakOf = (exit: Exit.Exit<void, Permits.PermitLeak>) => {
  const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  expect(Option.isSome(failure), "a PermitLeak was expected").toBe(true)
  return Option.getOrThrow(failure)
}

/** Forks a holder of `permits` permits of `semaphore` until `gate` opens. */
const holdPermits = (semaphore: Effect.Semaphore, permits: number, gate: Deferred.Deferred<void>) =>
  Effect.fork(semaphore.withPermits(permits)(Deferred.await(gate)))

describe("Permits.semaphore", () => {
  it.effect("a semaphore of 5 with 2 permits held reads 2 outstanding, then 0 once they are returned", () =>
    Effect.gen(function*() {
      const pool = yield* Effect.makeSemaphore(5)
      const probe = Permits.semaphore("db-pool", pool, 5)
      expect(yield* probe.outstanding).toBe(0)

      const gate = yield* Deferred.make<void>()
      const holder = yield* holdPermits(pool, 2, gate)
      yield* settle
      expect(yield* probe.outstanding).toBe(2)
      const leak = leakOf(yield* Effect.exit(Permits.expectReturned([probe])))
      expect(leak.leaks).toEqual([{ name: "db-pool", outstanding: 2 }])
      expect(leak.message).toBe("permits not returned: db-pool has 2 outstanding")

      yield* Deferred.succeed(gate, undefined)
      yield* finished(holder)
      expect(yield* probe.outstanding).toBe(0)
      yield* Permits.expectReturned([probe])
    }))

  it.effect("probing does not let a waiter in or take its place: a waiter for 3 of 5 still waits, then runs", () =>
    Effect.gen(function*() {
      const pool = yield* Effect.makeSemaphore(5)
      const probe = Permits.semaphore("busy-pool", pool, 5)
      const gate = yield* Deferred.make<void>()
      const holder = yield* holdPermits(pool, 4, gate)
      yield* settle
      let waiterRan = false
      const waiter = yield* Effect.fork(pool.withPermits(3)(Effect.sync(() => waiterRan = true)))
      yield* settle
      expect(yield* probe.outstanding).toBe(4)
      yield* settle
      expect(waiterRan).toBe(false)

      yield* Deferred.succeed(gate, undefined)
      yield* finished(holder)
      yield* finished(waiter)
      expect(waiterRan).toBe(true)
      expect(yield* probe.outstanding).toBe(0)
    }))

  it.effect.prop(
    "reads exactly the permits its holders took, for any total and any split among holders",
    {
      total: fc.integer({ min: 1, max: 200 }),
      shares: fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 5 })
    },
    ({ shares, total }) =>
      Effect.gen(function*() {
        const pool = yield* Effect.makeSemaphore(total)
        const gate = yield* Deferred.make<void>()
        let taken = 0
        const holders: Array<Fiber.RuntimeFiber<void>> = []
        for (const share of shares) {
          if (taken + share > total) continue
          taken += share
          holders.push(yield* holdPermits(pool, share, gate))
        }
        yield* settle
        expect(yield* Permits.semaphore("prop-pool", pool, total).outstanding).toBe(taken)
        yield* Deferred.succeed(gate, undefined)
        yield* Effect.forEach(holders, finished, { discard: true })
        expect(yield* Permits.semaphore("prop-pool", pool, total).outstanding).toBe(0)
      }),
    PropertyRuns.fastCheck(20261211)
  )
})

describe("Permits.concurrencyLimit", () => {
  it.scoped("a permit held by an unfinished call reads 1, and 0 once the call ends", () =>
    Effect.gen(function*() {
      const limit = yield* concurrencyLimit({ max: 2, name: "permits-held-call" })
      const probe = Permits.concurrencyLimit("permits-held-call")
      const gate = yield* Deferred.make<void>()
      const call = yield* Effect.fork(limit((_: void) => Deferred.await(gate))(undefined))
      yield* settle
      expect(yield* probe.outstanding).toBe(1)
      const leak = leakOf(yield* Effect.exit(Permits.expectReturned([probe])))
      expect(leak.message).toBe("permits not returned: concurrencyLimit permits-held-call has 1 outstanding")

      yield* Deferred.succeed(gate, undefined)
      yield* finished(call)
      expect(yield* probe.outstanding).toBe(0)
      yield* Permits.expectReturned([probe])
    }))

  it.scoped("an interrupted call gives its permit back", () =>
    Effect.gen(function*() {
      const limit = yield* concurrencyLimit({ max: 1, name: "permits-interrupted-call" })
      const probe = Permits.concurrencyLimit("permits-interrupted-call")
      const call = yield* Effect.fork(limit((_: void) => Effect.never)(undefined))
      yield* settle
      expect(yield* probe.outstanding).toBe(1)
      yield* Fiber.interrupt(call)
      expect(yield* probe.outstanding).toBe(0)
    }))
})

describe("Permits.rateLimitWaiting", () => {
  it.scoped("a caller waiting for a slot reads 1 until its slot comes", () =>
    Effect.gen(function*() {
      const limit = yield* rateLimit({ limit: 1, per: "1 second", name: "permits-rate-waiting" })
      const probe = Permits.rateLimitWaiting("permits-rate-waiting")
      const service = limit((_: void) => Effect.void)
      yield* service(undefined)
      const waiter = yield* Effect.fork(service(undefined))
      yield* settle
      expect(yield* probe.outstanding).toBe(1)
      const leak = leakOf(yield* Effect.exit(Permits.expectReturned([probe])))
      expect(leak.message).toBe(
        "permits not returned: rateLimit permits-rate-waiting (waiting callers) has 1 outstanding"
      )

      yield* TestClock.adjust("1 second")
      yield* finished(waiter)
      expect(yield* probe.outstanding).toBe(0)
    }))
})

describe("Permits.expectReturned", () => {
  it.scoped("names every probe with permits out, and only those", () =>
    Effect.gen(function*() {
      const pool = yield* Effect.makeSemaphore(3)
      const gate = yield* Deferred.make<void>()
      yield* holdPermits(pool, 3, gate)
      const limit = yield* concurrencyLimit({ max: 4, name: "permits-several" })
      yield* Effect.fork(limit((_: void) => Deferred.await(gate))(undefined))
      yield* Effect.fork(limit((_: void) => Deferred.await(gate))(undefined))
      yield* settle
      const probes = [
        Permits.semaphore("full-pool", pool, 3),
        Permits.semaphore("idle-pool", yield* Effect.makeSemaphore(3), 3),
        Permits.concurrencyLimit("permits-several"),
        Permits.rateLimitWaiting("permits-never-used")
      ]
      const leak = leakOf(yield* Effect.exit(Permits.expectReturned(probes)))
      expect(leak.leaks).toEqual([
        { name: "full-pool", outstanding: 3 },
        { name: "concurrencyLimit permits-several", outstanding: 2 }
      ])
      expect(leak.message).toBe(
        "permits not returned: full-pool has 3 outstanding; concurrencyLimit permits-several has 2 outstanding"
      )
      yield* Deferred.succeed(gate, undefined)
      yield* settle
      yield* Permits.expectReturned(probes)
    }))
})
