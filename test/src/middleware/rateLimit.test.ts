/**
 * rateLimit: never more than `limit` admissions in any window of length `per`, in both modes, with the
 * exact admit/refuse decision and `retryAfter` of a sliding log; waiting callers admitted in arrival
 * order at the earliest slot the window allows; a waiter that gives up hands its slot to the ones behind
 * it; keyed limits with bounded, least-recently-used key memory. The expected schedules come from models
 * written here, not from the module.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, Metric, TestClock } from "effect"
import { Middleware, RateLimited } from "keel"
import { PropertyRuns } from "keel/testing"
import { advanceTo, atOnce, exitNow, finished, settle } from "./timing.js"

const { rateLimit, rateLimitMetrics, stack, timeout, within } = Middleware
type RateLimitRejection = Middleware.RateLimitRejection

/** A service that records the instant (ms after `origin`) each call is admitted, then runs `duration`. */
const makeProbe = (origin = 0) => {
  const admitted: Array<{ readonly id: number; readonly at: number }> = []
  const service = (call: { readonly id: number; readonly duration?: number }) =>
    Effect.flatMap(Clock.currentTimeMillis, (at) => {
      admitted.push({ id: call.id, at: at - origin })
      return call.duration ? Effect.sleep(Duration.millis(call.duration)) : Effect.void
    })
  return {
    service,
    admitted,
    admissionOf: (id: number) => admitted.find((entry) => entry.id === id)?.at,
    schedule: () => new Map(admitted.map(({ at, id }) => [id, at]))
  }
}

/** No window [t, t + per) holds more than `limit` of these instants. */
const expectWindowRespected = (instants: ReadonlyArray<number>, limit: number, per: number) => {
  const sorted = [...instants].sort((a, b) => a - b)
  sorted.forEach((at, n) => {
    const later = sorted[n + limit]
    if (later !== undefined) expect(later - at, `admissions at ${sorted.join(", ")}`).toBeGreaterThanOrEqual(per)
  })
}

/** Reject mode, the sliding-log model: admitted iff fewer than `limit` admissions lie in (t − per, t]. */
const rejectModel = (limit: number, per: number, arrivals: ReadonlyArray<number>) => {
  const admitted: Array<number> = []
  return arrivals.map((at) => {
    const inWindow = admitted.filter((instant) => instant > at - per)
    if (inWindow.length < limit) {
      admitted.push(at)
      return { admitted: true as const }
    }
    return { admitted: false as const, retryAfter: inWindow[inWindow.length - limit]! + per - at }
  })
}

/**
 * Wait mode, FIFO: each caller's slot is the earliest instant not before its arrival, not before the
 * slot of the caller ahead, and `per` after the slot `limit` places before it. A caller that would wait
 * while `maxWaiting` callers (slots still in the future) already wait is refused with the slot it missed.
 */
const waitModel = (
  limit: number,
  per: number,
  maxWaiting: number,
  calls: ReadonlyArray<{ readonly id: number; readonly arrival: number }>
) => {
  const slots: Array<number> = []
  const admissions = new Map<number, number>()
  const refusals = new Map<number, number>()
  for (const { arrival, id } of calls) {
    let slot = Math.max(arrival, slots.at(-1) ?? -Infinity)
    if (slots.length >= limit) slot = Math.max(slot, slots[slots.length - limit]! + per)
    if (slot > arrival && slots.filter((at) => at > arrival).length >= maxWaiting) {
      refusals.set(id, slot - arrival)
      continue
    }
    slots.push(slot)
    admissions.set(id, slot)
  }
  return { admissions, refusals }
}

const readMetrics = (name: string) =>
  Effect.gen(function*() {
    const metrics = rateLimitMetrics(name)
    const rejections = (reason: RateLimitRejection) =>
      Effect.map(Metric.value(metrics.rejections(reason)), (state) => state.count)
    return {
      waiting: (yield* Metric.value(metrics.waiting)).value,
      keys: (yield* Metric.value(metrics.keys)).value,
      rateLimited: yield* rejections("rate-limited"),
      queueFull: yield* rejections("queue-full"),
      deadline: yield* rejections("deadline")
    }
  })

const refusedAfter = (millis: number) => new RateLimited({ retryAfter: Duration.millis(millis) })

describe("rateLimit, reject mode", () => {
  it.scoped("admits limit calls per window and tells how long until the next token is back", () =>
    Effect.gen(function*() {
      const limited = (yield* rateLimit({ limit: 3, per: "1 second", onLimit: "reject", name: "rl-reject" }))(
        (n: number) => Effect.succeed(n)
      )
      expect(yield* atOnce(Effect.forEach([1, 2, 3], limited))).toEqual([1, 2, 3])
      const refused = yield* atOnce(Effect.flip(limited(4)))
      expect(refused).toEqual(refusedAfter(1000))
      expect(refused.message).toBe("rate limited (retry after 1s)")
      yield* TestClock.adjust("400 millis")
      expect(yield* atOnce(Effect.flip(limited(5)))).toEqual(refusedAfter(600))
      yield* TestClock.adjust("600 millis")
      expect(yield* Effect.forEach([6, 7, 8], limited)).toEqual([6, 7, 8])
      expect(yield* readMetrics("rl-reject")).toMatchObject({ rateLimited: 2, waiting: 0 })
    }))

  it.scoped("each token comes back exactly per after it was spent: no double burst across a boundary", () =>
    Effect.gen(function*() {
      // A refilling bucket (2 per second) would admit two at 0.9 s and two more at 1.0 s: four in 0.1 s.
      const limited = (yield* rateLimit({ limit: 2, per: "1 second", onLimit: "reject" }))(() => Effect.void)
      yield* TestClock.adjust("900 millis")
      yield* atOnce(limited(undefined))
      yield* atOnce(limited(undefined))
      yield* TestClock.adjust("100 millis")
      expect(yield* atOnce(Effect.flip(limited(undefined)))).toEqual(refusedAfter(900))
      yield* TestClock.adjust("900 millis")
      yield* atOnce(limited(undefined))
      yield* atOnce(limited(undefined))
    }))
})

describe("rateLimit, wait mode", () => {
  it.scoped("callers wait in arrival order for the earliest slot the window allows", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({ limit: 2, per: "10 millis", name: "rl-wait" }))(probe.service)
      const fibers = yield* Effect.forEach([0, 1, 2, 3, 4], (id) => Effect.fork(limited({ id })))
      yield* settle
      expect(probe.schedule()).toEqual(new Map([[0, 0], [1, 0]]))
      expect(yield* readMetrics("rl-wait")).toMatchObject({ waiting: 3 })
      yield* advanceTo(10)
      expect(yield* readMetrics("rl-wait")).toMatchObject({ waiting: 1 })
      yield* advanceTo(20)
      yield* Effect.forEach(fibers, finished)
      expect(probe.schedule()).toEqual(new Map([[0, 0], [1, 0], [2, 10], [3, 10], [4, 20]]))
      expect(yield* readMetrics("rl-wait")).toMatchObject({ waiting: 0 })
    }))

  it.scoped("a waiter that gives up hands its slot to the callers behind it", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({ limit: 1, per: "10 millis" }))(probe.service)
      const fibers = yield* Effect.forEach([0, 1, 2, 3], (id) => Effect.fork(limited({ id })))
      yield* advanceTo(5)
      yield* Fiber.interrupt(fibers[1]!)
      yield* advanceTo(30)
      // Without the give-back, 2 and 3 would be admitted at 20 and 30.
      expect(probe.schedule()).toEqual(new Map([[0, 0], [2, 10], [3, 20]]))
    }))

  it.scoped("past maxWaiting a caller is refused at once with the slot it would have had", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({ limit: 1, per: "10 millis", maxWaiting: 2, name: "rl-full" }))(
        probe.service
      )
      const fibers = yield* Effect.forEach([0, 1, 2], (id) => Effect.fork(limited({ id })))
      yield* settle
      expect(yield* atOnce(Effect.flip(limited({ id: 3 })))).toEqual(refusedAfter(30))
      expect(yield* readMetrics("rl-full")).toMatchObject({ waiting: 2, queueFull: 1 })
      yield* advanceTo(10)
      const late = yield* Effect.fork(limited({ id: 4 }))
      yield* advanceTo(30)
      yield* Effect.forEach([...fibers, late], finished)
      expect(probe.schedule()).toEqual(new Map([[0, 0], [1, 10], [2, 20], [4, 30]]))
    }))

  it.scoped("a waiter whose slot has come no longer counts as waiting, even before it wakes", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({ limit: 1, per: "10 millis", maxWaiting: 1 }))(probe.service)
      yield* atOnce(limited({ id: 0 }))
      const waiter = yield* Effect.fork(limited({ id: 1 }))
      yield* settle
      // Woken at 10 before the waiter (TestClock wakes the later sleep of one instant first), this caller
      // arrives while the waiter's slot has come but its fiber has not run yet: the queue is empty.
      const arriving = yield* Effect.fork(Effect.zipRight(Effect.sleep("10 millis"), limited({ id: 2 })))
      yield* advanceTo(20)
      yield* Effect.forEach([waiter, arriving], finished)
      expect(probe.schedule()).toEqual(new Map([[0, 0], [1, 10], [2, 20]]))
    }))

  it.scoped("a caller whose slot lies at or past its deadline is refused at once instead of waiting", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({ limit: 1, per: "10 millis", name: "rl-deadline" }))(probe.service)
      yield* atOnce(limited({ id: 0 }))
      expect(yield* atOnce(Effect.flip(within("10 millis")(limited({ id: 1 }))))).toEqual(refusedAfter(10))
      expect(yield* readMetrics("rl-deadline")).toMatchObject({ deadline: 1, waiting: 0 })
      const patient = yield* Effect.fork(within("11 millis")(limited({ id: 2 })))
      yield* advanceTo(10)
      yield* finished(patient)
      expect(probe.schedule()).toEqual(new Map([[0, 0], [2, 10]]))
      // A plain timeout sets no deadline: the caller waits and the timeout interrupts it.
      const timedOut = yield* Effect.fork(stack(yield* timeout({ after: "5 millis" }))(limited)({ id: 3 }))
      yield* advanceTo(15)
      expect(Exit.isFailure(yield* exitNow(timedOut))).toBe(true)
      // Its slot (20) went back: the next caller gets it.
      const next = yield* Effect.fork(limited({ id: 4 }))
      yield* advanceTo(20)
      yield* finished(next)
      expect(probe.admissionOf(4)).toBe(20)
    }))
})

describe("rateLimit, keyed", () => {
  interface Request {
    readonly client: string
    readonly id: number
  }

  it.scoped("each key has its own limit", () =>
    Effect.gen(function*() {
      const limiter = yield* rateLimit({
        limit: 1,
        per: "10 millis",
        onLimit: "reject",
        key: (request: Request) => request.client
      })
      const limited = limiter((request: Request) => Effect.succeed(request.id))
      expect(yield* atOnce(limited({ client: "a", id: 1 }))).toBe(1)
      expect(yield* atOnce(Effect.flip(limited({ client: "a", id: 2 })))).toEqual(refusedAfter(10))
      expect(yield* atOnce(limited({ client: "b", id: 3 }))).toBe(3)
      // A keyed limit wraps services whose requests carry the key, and only those.
      // @ts-expect-error a number has no client
      limiter((n: number) => Effect.succeed(n))
    }))

  it.scoped("remembers at most maxKeys keys, forgetting the least recently used first", () =>
    Effect.gen(function*() {
      const limited = (yield* rateLimit({
        limit: 1,
        per: "10 millis",
        onLimit: "reject",
        key: (request: Request) => request.client,
        maxKeys: 2,
        name: "rl-keys"
      }))((request: Request) => Effect.succeed(request.id))
      yield* atOnce(limited({ client: "a", id: 1 }))
      yield* atOnce(limited({ client: "b", id: 2 }))
      // Refused, and a is now the most recently used key.
      yield* atOnce(Effect.flip(limited({ client: "a", id: 3 })))
      yield* atOnce(limited({ client: "c", id: 4 }))
      expect(yield* readMetrics("rl-keys")).toMatchObject({ keys: 2 })
      // a was kept; b was forgotten and starts fresh (the documented trade-off).
      expect(yield* atOnce(Effect.flip(limited({ client: "a", id: 5 })))).toEqual(refusedAfter(10))
      expect(yield* atOnce(limited({ client: "b", id: 6 }))).toBe(6)
      expect(yield* readMetrics("rl-keys")).toMatchObject({ keys: 2 })
    }))

  it.scoped("never forgets a key whose callers are waiting while an idle key can go", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({
        limit: 1,
        per: "10 millis",
        key: (request: Request) => request.client,
        maxKeys: 2
      }))((request: Request) => probe.service(request))
      yield* atOnce(limited({ client: "a", id: 1 }))
      const waiter = yield* Effect.fork(limited({ client: "a", id: 2 }))
      yield* settle
      yield* atOnce(limited({ client: "b", id: 3 }))
      yield* atOnce(limited({ client: "c", id: 4 }))
      const third = yield* Effect.fork(limited({ client: "a", id: 5 }))
      yield* advanceTo(20)
      yield* Effect.forEach([waiter, third], finished)
      expect(probe.schedule()).toEqual(new Map([[1, 0], [2, 10], [3, 0], [4, 0], [5, 20]]))
    }))

  it.scoped("when every other key has waiters, forgets the oldest; its waiters keep their slots", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const limited = (yield* rateLimit({
        limit: 1,
        per: "10 millis",
        key: (request: Request) => request.client,
        maxKeys: 1
      }))((request: Request) => probe.service(request))
      yield* atOnce(limited({ client: "a", id: 1 }))
      const waiter = yield* Effect.fork(limited({ client: "a", id: 2 }))
      yield* settle
      yield* atOnce(limited({ client: "b", id: 3 }))
      // b, the key just added, is the one remembered: its next caller waits.
      const nextOfB = yield* Effect.fork(limited({ client: "b", id: 4 }))
      yield* advanceTo(10)
      yield* Effect.forEach([waiter, nextOfB], finished)
      expect(probe.schedule()).toEqual(new Map([[1, 0], [2, 10], [3, 0], [4, 10]]))
    }))
})

describe("rateLimit options", () => {
  it.effect("refuses options that cannot work, as a defect", () =>
    Effect.gen(function*() {
      const bad = [
        [{ limit: 0, per: "1 second" }, "limit must be an integer ≥ 1 (got 0)"],
        [{ limit: 1.5, per: "1 second" }, "limit must be an integer ≥ 1 (got 1.5)"],
        [{ limit: 1, per: "0 millis" }, "per must be a finite duration > 0 (got 0)"],
        [{ limit: 1, per: Duration.infinity }, "per must be a finite duration > 0 (got Infinity)"],
        [{ limit: 1, per: "1 second", maxWaiting: -1 }, "maxWaiting must be an integer ≥ 0 (got -1)"],
        [{ limit: 1, per: "1 second", maxKeys: 0 }, "maxKeys must be an integer ≥ 1 (got 0)"]
      ] as const
      for (const [options, problem] of bad) {
        const exit = yield* Effect.scoped(Effect.exit(rateLimit(options)))
        expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit), JSON.stringify(options)).toBe(true)
        const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        expect(defect, JSON.stringify(options)).toBeInstanceOf(Cause.IllegalArgumentException)
        expect((defect as Error).message).toBe(`Middleware.rateLimit: ${problem}`)
      }
    }))
})

describe("rateLimit properties", () => {
  const arrivalsArbitrary = (maxTime: number) =>
    fc.array(fc.integer({ min: 0, max: maxTime }), { minLength: 1, maxLength: 14 }).map((drawn) =>
      drawn.sort((a, b) => a - b)
    )

  it.effect.prop(
    "reject mode: admitted exactly when fewer than limit lie in the last per, per key; never more",
    {
      limit: fc.integer({ min: 1, max: 4 }),
      per: fc.integer({ min: 1, max: 12 }),
      arrivals: arrivalsArbitrary(36),
      keys: fc.array(fc.constantFrom("a", "b"), { minLength: 14, maxLength: 14 })
    },
    ({ arrivals, keys, limit, per }) =>
      Effect.scoped(Effect.gen(function*() {
        const origin = yield* Clock.currentTimeMillis
        const limited = (yield* rateLimit({
          limit,
          per: Duration.millis(per),
          onLimit: "reject",
          key: (request: { readonly key: string }) => request.key
        }))(() => Effect.void)
        const outcomes: Array<{ readonly key: string; readonly at: number; readonly exit: Exit.Exit<void, RateLimited> }> = []
        for (const [n, at] of arrivals.entries()) {
          yield* advanceTo(origin + at)
          outcomes.push({ key: keys[n]!, at, exit: yield* atOnce(Effect.exit(limited({ key: keys[n]! }))) })
        }
        for (const key of ["a", "b"]) {
          const mine = outcomes.filter((outcome) => outcome.key === key)
          const expected = rejectModel(limit, per, mine.map(({ at }) => at))
          mine.forEach(({ at, exit }, n) => {
            const model = expected[n]!
            expect(exit, `${key} at ${at}`).toEqual(model.admitted ? Exit.void : Exit.fail(refusedAfter(model.retryAfter)))
          })
          expectWindowRespected(mine.filter(({ exit }) => Exit.isSuccess(exit)).map(({ at }) => at), limit, per)
        }
      })),
    PropertyRuns.fastCheck(20261206)
  )

  it.effect.prop(
    "wait mode: admitted in arrival order at the earliest slot, never more than limit per window",
    {
      limit: fc.integer({ min: 1, max: 3 }),
      per: fc.integer({ min: 1, max: 12 }),
      maxWaiting: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(1000)),
      arrivals: arrivalsArbitrary(30)
    },
    ({ arrivals, limit, maxWaiting, per }) =>
      Effect.scoped(Effect.gen(function*() {
        const origin = yield* Clock.currentTimeMillis
        const probe = makeProbe(origin)
        const name = "rl-prop"
        const limited = (yield* rateLimit({ limit, per: Duration.millis(per), maxWaiting, name }))(probe.service)
        const calls = arrivals.map((arrival, id) => ({ id, arrival }))
        const fibers: Array<Fiber.RuntimeFiber<void, RateLimited>> = []
        for (const call of calls) {
          yield* advanceTo(origin + call.arrival)
          fibers.push(yield* Effect.fork(limited(call)))
          yield* settle
        }
        yield* advanceTo(origin + 1_000)
        const exits = yield* Effect.forEach(fibers, exitNow)

        const model = waitModel(limit, per, maxWaiting, calls)
        expect(probe.schedule()).toEqual(model.admissions)
        expect(probe.admitted.map(({ id }) => id)).toEqual([...model.admissions.keys()])
        calls.forEach(({ id }) => {
          const refusal = model.refusals.get(id)
          expect(exits[id]).toEqual(refusal === undefined ? Exit.void : Exit.fail(refusedAfter(refusal)))
        })
        expectWindowRespected(probe.admitted.map(({ at }) => at), limit, per)
        expect(yield* readMetrics(name)).toMatchObject({ waiting: 0 })
      })),
    PropertyRuns.fastCheck(20261207)
  )

  // Six callers at t = 0, limit 2 per 10 ms, each call running 7 ms: slots 0, 0, 10, 10, 20, 20. Each
  // caller is interrupted at each instant 0, 5, …, 25 (waiting, running, or done) and after each number of
  // scheduler steps at t = 0. A caller interrupted before its slot gives it back: the others are admitted
  // exactly as if it had never come. One interrupted after its slot has spent its token like any other.
  // Afterwards the full capacity is there: two calls at once, the third one `per` later.
  const limit = 2
  const per = 10
  const stepCalls = Array.from({ length: 6 }, (_, id) => ({ id, arrival: 0, duration: 7 }))

  const runInterrupted = (victim: number, interruptAt: { readonly instant: number } | { readonly yields: number }) =>
    Effect.scoped(Effect.gen(function*() {
      const name = "rl-steps"
      const origin = yield* Clock.currentTimeMillis
      const probe = makeProbe(origin)
      const limiter = yield* rateLimit({ limit, per: Duration.millis(per), name })
      const limited = limiter(probe.service)
      const fibers = yield* Effect.forEach(stepCalls, (call) => Effect.fork(limited(call)))
      if ("yields" in interruptAt) {
        if (interruptAt.yields > 0) yield* Effect.repeatN(Effect.yieldNow(), interruptAt.yields - 1)
      } else yield* advanceTo(origin + interruptAt.instant)
      yield* Fiber.interrupt(fibers[victim]!)
      yield* advanceTo(origin + 100)

      const victimAdmitted = probe.admissionOf(victim) !== undefined
      const expected = waitModel(limit, per, 1000, victimAdmitted ? stepCalls : stepCalls.filter(({ id }) => id !== victim))
      expect(probe.schedule(), `victim ${victim}`).toEqual(expected.admissions)
      if ("instant" in interruptAt) {
        const slot = waitModel(limit, per, 1000, stepCalls).admissions.get(victim)!
        expect(victimAdmitted, `victim ${victim} at ${interruptAt.instant}`).toBe(slot <= interruptAt.instant)
      }
      expect(yield* readMetrics(name)).toMatchObject({ waiting: 0 })

      const after = makeProbe(origin + 100)
      const fresh = limiter(after.service)
      const last = yield* Effect.forEach([0, 1, 2], (id) => Effect.fork(fresh({ id })))
      yield* settle
      expect(after.schedule()).toEqual(new Map([[0, 0], [1, 0]]))
      yield* advanceTo(origin + 100 + per)
      yield* Effect.forEach(last, finished)
      expect(after.schedule()).toEqual(new Map([[0, 0], [1, 0], [2, per]]))
    }))

  it.effect("interrupting a caller at any instant leaks no token and delays no one", () =>
    Effect.forEach(stepCalls, ({ id }) =>
      Effect.forEach([0, 5, 10, 15, 20, 25], (instant) => runInterrupted(id, { instant })), { discard: true }))

  it.effect("interrupting a caller after any number of scheduler steps leaks no token", () =>
    Effect.forEach(stepCalls, ({ id }) =>
      Effect.forEach(Array.from({ length: 6 }, (_, yields) => yields), (yields) =>
        runInterrupted(id, { yields })), { discard: true }))
})
