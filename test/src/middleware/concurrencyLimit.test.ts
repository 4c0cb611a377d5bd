/**
 * concurrencyLimit: never more than `max` calls in flight, waiters admitted in arrival order and as soon
 * as a permit is free, a bounded queue, and no permit lost to an interruption at any point — including a
 * waiter interrupted at the very moment it is handed a permit. Expected schedules come from a FIFO model
 * written here, not from the module.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Deferred, Duration, Effect, Exit, FastCheck as fc, Fiber, FiberId, Metric } from "effect"
import { Middleware, Overloaded } from "keel"
import { Permits, PropertyRuns } from "keel/testing"
import { advanceTo, atOnce, exitNow, finished, settle } from "./timing.js"

const { concurrencyLimit, concurrencyLimitMetrics, loadShed, stack } = Middleware

interface Call {
  readonly id: number
  readonly arrival: number
  readonly duration: number
}

/** A service that records when each call starts (ms after `origin`) and how many run at once. */
const makeProbe = (origin = 0) => {
  const started: Array<{ readonly id: number; readonly at: number }> = []
  let inFlight = 0
  let maxInFlight = 0
  const service = (call: Pick<Call, "id" | "duration">) =>
    Effect.acquireUseRelease(
      Effect.flatMap(Clock.currentTimeMillis, (at) =>
        Effect.sync(() => {
          started.push({ id: call.id, at: at - origin })
          inFlight++
          maxInFlight = Math.max(maxInFlight, inFlight)
        })),
      () => (call.duration > 0 ? Effect.sleep(Duration.millis(call.duration)) : Effect.void),
      () => Effect.sync(() => inFlight--)
    )
  return {
    service,
    started,
    startOf: (id: number) => started.find((entry) => entry.id === id)?.at,
    get inFlight() {
      return inFlight
    },
    get maxInFlight() {
      return maxInFlight
    }
  }
}

/**
 * The FIFO model: callers in arrival order; each starts when it has arrived, the caller ahead has started
 * and a permit is free (a permit freed at t serves a caller arriving at t). A caller that would wait while
 * `maxWaiting` callers already wait is refused.
 */
const fifoStarts = (max: number, maxWaiting: number, calls: ReadonlyArray<Call>) => {
  const permitFreeAt = Array.from({ length: max }, () => -Infinity)
  const starts = new Map<number, number>()
  let previousStart = -Infinity
  for (const call of calls) {
    const earliest = Math.min(...permitFreeAt)
    const start = Math.max(call.arrival, previousStart, earliest)
    if (start > call.arrival) {
      const waitingAhead = [...starts.values()].filter((at) => at > call.arrival).length
      if (waitingAhead >= maxWaiting) continue
    }
    starts.set(call.id, start)
    permitFreeAt[permitFreeAt.indexOf(earliest)] = start + call.duration
    previousStart = start
  }
  return starts
}

const readMetrics = (name: string) =>
  Effect.gen(function*() {
    const metrics = concurrencyLimitMetrics(name)
    return {
      inFlight: (yield* Metric.value(metrics.inFlight)).value,
      waiting: (yield* Metric.value(metrics.waiting)).value,
      shed: (yield* Metric.value(metrics.rejections("shed"))).count,
      queueFull: (yield* Metric.value(metrics.rejections("queue-full"))).count
    }
  })

/** Holds a permit until `gate` opens; records that it started. */
const holder = (gate: Deferred.Deferred<void>, started: Array<string>, name: string) =>
  Effect.zipRight(Effect.sync(() => started.push(name)), Deferred.await(gate))

/** With a fresh limit, `max` calls start at once and the next one queues: no permit was lost. */
const expectFullCapacity = (
  limited: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | Overloaded, R>,
  max: number,
  name: string
) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const started: Array<string> = []
    const fibers = yield* Effect.forEach(
      Array.from({ length: max + 1 }, (_, n) => `after-${n}`),
      (id) => Effect.fork(limited(holder(gate, started, id)))
    )
    yield* settle
    expect(started).toEqual(Array.from({ length: max }, (_, n) => `after-${n}`))
    expect(yield* readMetrics(name)).toMatchObject({ inFlight: max, waiting: 1 })
    yield* Deferred.succeed(gate, undefined)
    yield* Effect.forEach(fibers, finished)
    expect(started).toHaveLength(max + 1)
    expect(yield* readMetrics(name)).toMatchObject({ inFlight: 0, waiting: 0 })
  })

const viaMiddleware = (middleware: Effect.Effect.Success<ReturnType<typeof concurrencyLimit>>) =>
<A, E, R>(effect: Effect.Effect<A, E, R>) => middleware((_: void) => effect)(undefined)

describe("concurrencyLimit", () => {
  it.scoped("admits max calls at once and queues the rest in arrival order", () =>
    Effect.gen(function*() {
      const limited = viaMiddleware(yield* concurrencyLimit({ max: 2, name: "cl-basic" }))
      const gates = yield* Effect.forEach([0, 1, 2, 3], () => Deferred.make<void>())
      const started: Array<string> = []
      const fibers = yield* Effect.forEach([0, 1, 2, 3], (n) =>
        Effect.fork(limited(holder(gates[n]!, started, `call-${n}`))).pipe(Effect.tap(() => settle)))
      expect(started).toEqual(["call-0", "call-1"])
      expect(yield* readMetrics("cl-basic")).toMatchObject({ inFlight: 2, waiting: 2 })
      yield* Deferred.succeed(gates[1]!, undefined)
      yield* settle
      expect(started).toEqual(["call-0", "call-1", "call-2"])
      yield* Deferred.succeed(gates[0]!, undefined)
      yield* settle
      expect(started).toEqual(["call-0", "call-1", "call-2", "call-3"])
      expect(yield* readMetrics("cl-basic")).toMatchObject({ inFlight: 2, waiting: 0 })
      yield* Effect.forEach(gates, (gate) => Deferred.succeed(gate, undefined))
      yield* Effect.forEach(fibers, finished)
      expect(yield* readMetrics("cl-basic")).toMatchObject({ inFlight: 0, waiting: 0 })
    }))

  it.scoped("a call gives its permit back however it ends: success, failure, defect, interruption", () =>
    Effect.gen(function*() {
      const limited = viaMiddleware(yield* concurrencyLimit({ max: 1, name: "cl-ends" }))
      expect(yield* atOnce(limited(Effect.succeed("ok")))).toBe("ok")
      expect(yield* atOnce(Effect.flip(limited(Effect.fail("boom"))))).toBe("boom")
      const died = yield* atOnce(Effect.exit(limited(Effect.dieMessage("bug"))))
      expect(Exit.isFailure(died) && !Exit.isInterrupted(died)).toBe(true)
      const thrown = yield* atOnce(Effect.exit(
        (yield* concurrencyLimit({ max: 1, name: "cl-throws" }))((_: void): Effect.Effect<void> => {
          throw new Error("thrown while building the effect")
        })(undefined)
      ))
      expect(Exit.isFailure(thrown)).toBe(true)
      expect(yield* readMetrics("cl-throws")).toMatchObject({ inFlight: 0 })
      const running = yield* Effect.fork(limited(Effect.never))
      yield* settle
      expect(yield* readMetrics("cl-ends")).toMatchObject({ inFlight: 1 })
      yield* Fiber.interrupt(running)
      expect(yield* readMetrics("cl-ends")).toMatchObject({ inFlight: 0, waiting: 0 })
      yield* expectFullCapacity(limited, 1, "cl-ends")
    }))

  it.scoped("a call that is already its result is admitted at once while a permit is free, and queues or is shed like any other when none is", () =>
    Effect.gen(function*() {
      const middleware = yield* concurrencyLimit({ max: 1, name: "cl-constant" })
      const limited = viaMiddleware(middleware)
      expect(yield* atOnce(limited(Effect.succeed("constant")))).toBe("constant")
      expect(yield* atOnce(Effect.flip(limited(Effect.fail("constant failure"))))).toBe("constant failure")
      expect(yield* readMetrics("cl-constant")).toMatchObject({ inFlight: 0, waiting: 0 })

      const gate = yield* Deferred.make<void>()
      const started: Array<string> = []
      const holding = yield* Effect.fork(limited(holder(gate, started, "holder")))
      yield* settle
      const queued = yield* Effect.fork(limited(Effect.succeed("after the holder")))
      yield* settle
      expect(yield* readMetrics("cl-constant")).toMatchObject({ inFlight: 1, waiting: 1 })
      const shedding = stack(yield* loadShed(), middleware)((_: void) => Effect.succeed("not while full"))
      expect(yield* atOnce(Effect.flip(shedding(undefined)))).toEqual(new Overloaded({ reason: "concurrency limit reached" }))

      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(queued)).toBe("after the holder")
      yield* finished(holding)
      expect(yield* readMetrics("cl-constant")).toMatchObject({ inFlight: 0, waiting: 0 })
      yield* expectFullCapacity(limited, 1, "cl-constant")
    }))

  it.scoped("past maxWaiting a call fails at once with Overloaded, counted as queue-full", () =>
    Effect.gen(function*() {
      const limited = viaMiddleware(yield* concurrencyLimit({ max: 1, maxWaiting: 2, name: "cl-full" }))
      const gate = yield* Deferred.make<void>()
      const started: Array<string> = []
      const fibers = yield* Effect.forEach(["a", "b", "c"], (id) =>
        Effect.fork(limited(holder(gate, started, id))).pipe(Effect.tap(() => settle)))
      const refused = yield* atOnce(Effect.flip(limited(Effect.void)))
      expect(refused).toEqual(new Overloaded({ reason: "concurrency limit: waiting queue full" }))
      expect(refused.message).toBe("overloaded: concurrency limit: waiting queue full")
      expect(yield* readMetrics("cl-full")).toEqual({ inFlight: 1, waiting: 2, shed: 0, queueFull: 1 })
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach(fibers, finished)
      expect(started).toEqual(["a", "b", "c"])

      const neverQueues = viaMiddleware(yield* concurrencyLimit({ max: 1, maxWaiting: 0, name: "cl-no-queue" }))
      const busy = yield* Effect.fork(neverQueues(Effect.never))
      yield* settle
      expect(yield* atOnce(Effect.flip(neverQueues(Effect.void)))).toBeInstanceOf(Overloaded)
      yield* Fiber.interrupt(busy)
      expect(yield* atOnce(neverQueues(Effect.succeed(1)))).toBe(1)
    }))

  it.scoped("a waiter interrupted while queued leaves the queue; the next one takes its turn", () =>
    Effect.gen(function*() {
      const limited = viaMiddleware(yield* concurrencyLimit({ max: 1, name: "cl-leave" }))
      const gate = yield* Deferred.make<void>()
      const started: Array<string> = []
      const first = yield* Effect.fork(limited(holder(gate, started, "first")))
      yield* settle
      const quitter = yield* Effect.fork(limited(holder(gate, started, "quitter")))
      yield* settle
      const patient = yield* Effect.fork(limited(holder(gate, started, "patient")))
      yield* settle
      expect(yield* readMetrics("cl-leave")).toMatchObject({ inFlight: 1, waiting: 2 })
      yield* Fiber.interrupt(quitter)
      expect(yield* readMetrics("cl-leave")).toMatchObject({ inFlight: 1, waiting: 1 })
      yield* Fiber.interrupt(first)
      yield* settle
      expect(started).toEqual(["first", "patient"])
      yield* Deferred.succeed(gate, undefined)
      yield* finished(patient)
      yield* expectFullCapacity(limited, 1, "cl-leave")
    }))

  it.scoped("a waiter handed a permit at the moment it is interrupted passes the permit on", () =>
    Effect.gen(function*() {
      const limited = viaMiddleware(yield* concurrencyLimit({ max: 1, name: "cl-handover" }))
      const gate = yield* Deferred.make<void>()
      const started: Array<string> = []
      const handedOver = yield* Deferred.make<void>()
      const owner = yield* Effect.fork(
        limited(Effect.zipRight(Deferred.await(handedOver), Effect.sync(() => started.push("owner"))))
      )
      yield* settle
      const victim = yield* Effect.fork(limited(holder(gate, started, "victim")))
      yield* settle
      const next = yield* Effect.fork(limited(holder(gate, started, "next")))
      yield* settle
      // The owner is woken first and the victim's interrupt is sent right after, in one synchronous step:
      // the owner hands its permit to the victim (still first in the queue) before the victim, whose
      // mailbox already holds the interrupt, runs again.
      yield* Deferred.succeed(handedOver, undefined)
      yield* Effect.sync(() => victim.unsafeInterruptAsFork(FiberId.none))
      yield* finished(owner)
      expect(Exit.isInterrupted(yield* exitNow(victim))).toBe(true)
      yield* settle
      expect(started).toEqual(["owner", "next"])
      expect(yield* readMetrics("cl-handover")).toMatchObject({ inFlight: 1, waiting: 0 })
      yield* Deferred.succeed(gate, undefined)
      yield* finished(next)
      yield* expectFullCapacity(limited, 1, "cl-handover")
    }))

  it.scoped("a permit released while the next waiter is being interrupted is never lost (same step)", () =>
    Effect.gen(function*() {
      // The release happens on the test fiber itself, right after it signals the interrupt, so the
      // waiter finds both the interrupt and its permit waiting when it next runs.
      const limited = viaMiddleware(yield* concurrencyLimit({ max: 1, name: "cl-same-step" }))
      const started: Array<string> = []
      const gate = yield* Deferred.make<void>()
      let victim: Fiber.RuntimeFiber<void, Overloaded> | undefined
      yield* atOnce(limited(Effect.gen(function*() {
        const waiter = yield* Effect.fork(limited(holder(gate, started, "victim")))
        victim = waiter
        yield* settle
        expect(yield* readMetrics("cl-same-step")).toMatchObject({ inFlight: 1, waiting: 1 })
        waiter.unsafeInterruptAsFork(FiberId.none)
      })))
      expect(Exit.isInterrupted(yield* exitNow(victim!))).toBe(true)
      expect(yield* readMetrics("cl-same-step")).toMatchObject({ inFlight: 0, waiting: 0 })
      yield* expectFullCapacity(limited, 1, "cl-same-step")
    }))

  it.effect("refuses options that cannot work, as a defect", () =>
    Effect.gen(function*() {
      const cases = [
        [0, 1, "max must be an integer ≥ 1 (got 0)"],
        [1.5, 1, "max must be an integer ≥ 1 (got 1.5)"],
        [2, -1, "maxWaiting must be an integer ≥ 0 (got -1)"],
        [2, 0.5, "maxWaiting must be an integer ≥ 0 (got 0.5)"]
      ] as const
      for (const [max, maxWaiting, problem] of cases) {
        const exit = yield* Effect.scoped(Effect.exit(concurrencyLimit({ max, maxWaiting })))
        expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit), `${max}, ${maxWaiting}`).toBe(true)
        const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        expect(defect, `${max}, ${maxWaiting}`).toBeInstanceOf(Cause.IllegalArgumentException)
        expect((defect as Error).message).toBe(`Middleware.concurrencyLimit: ${problem}`)
      }
    }))
})

describe("concurrencyLimit properties", () => {
  const callsArbitrary = fc
    .array(fc.record({ arrival: fc.integer({ min: 0, max: 40 }), duration: fc.integer({ min: 0, max: 25 }) }), {
      minLength: 1,
      maxLength: 14
    })
    .map((drawn) =>
      drawn
        .map((call, n) => ({ ...call, id: n }))
        .sort((a, b) => a.arrival - b.arrival || a.id - b.id)
    )

  it.effect.prop(
    "never more than max in flight; callers start in arrival order, as soon as a permit is free",
    {
      max: fc.integer({ min: 1, max: 4 }),
      maxWaiting: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(1000)),
      calls: callsArbitrary
    },
    ({ calls, max, maxWaiting }) =>
      Effect.scoped(Effect.gen(function*() {
        const name = "cl-prop"
        const limited = yield* concurrencyLimit({ max, maxWaiting, name })
        const probe = makeProbe()
        const service = limited(probe.service)
        const fibers: Array<Fiber.RuntimeFiber<void, Overloaded>> = []
        for (const call of calls) {
          yield* advanceTo(call.arrival)
          fibers.push(yield* Effect.fork(service(call)))
          yield* settle
        }
        yield* advanceTo(1_000)
        const exits = yield* Effect.forEach(fibers, exitNow)

        expect(probe.maxInFlight).toBeLessThanOrEqual(max)
        const expected = fifoStarts(max, maxWaiting, calls)
        expect(new Map(probe.started.map(({ at, id }) => [id, at]))).toEqual(expected)
        // Start order is arrival order.
        expect(probe.started.map(({ id }) => id)).toEqual(calls.map(({ id }) => id).filter((id) => expected.has(id)))
        calls.forEach((call, n) => {
          const exit = exits[n]!
          if (expected.has(call.id)) expect(Exit.isSuccess(exit)).toBe(true)
          else {
            expect(exit).toEqual(Exit.fail(new Overloaded({ reason: "concurrency limit: waiting queue full" })))
          }
        })
        yield* Permits.expectReturned([Permits.concurrencyLimit(name)])
        expect(yield* readMetrics(name)).toMatchObject({ waiting: 0 })
      })),
    PropertyRuns.fastCheck(20261205)
  )

  // Five callers at t = 0 (durations below), two permits; the schedule ends at 5. Each caller is
  // interrupted at each instant 0..6 and after each number of scheduler steps 0..4 at t = 0 (before it
  // reached the limit, while queued, while running, after it finished). The others must run exactly as the
  // model says for a caller that left (or stopped running) at that point, and afterwards the full capacity
  // is there.
  const durations = [3, 1, 2, 2, 1]
  const max = 2
  const stepCalls: ReadonlyArray<Call> = durations.map((duration, id) => ({ id, arrival: 0, duration }))

  const runInterrupted = (victim: number, interruptAt: { readonly instant: number } | { readonly yields: number }) =>
    Effect.scoped(Effect.gen(function*() {
      const name = "cl-steps"
      const limited = yield* concurrencyLimit({ max, name })
      const origin = yield* Clock.currentTimeMillis
      const probe = makeProbe(origin)
      const service = limited(probe.service)
      const fibers = yield* Effect.forEach(stepCalls, (call) => Effect.fork(service(call)))
      if ("yields" in interruptAt) yield* Effect.repeatN(Effect.yieldNow(), interruptAt.yields - 1).pipe(
        Effect.when(() => interruptAt.yields > 0)
      )
      else yield* advanceTo(origin + interruptAt.instant)
      const interruptedAt = (yield* Clock.currentTimeMillis) - origin
      yield* Fiber.interrupt(fibers[victim]!)
      yield* advanceTo(origin + 100)
      const victimStart = probe.startOf(victim)
      const survivors = victimStart === undefined
        ? stepCalls.filter(({ id }) => id !== victim)
        : stepCalls.map((call) => call.id === victim ? { ...call, duration: Math.min(call.duration, interruptedAt - victimStart) } : call)
      const expected = fifoStarts(max, 1000, survivors)
      expect(new Map(probe.started.map(({ at, id }) => [id, at])), `victim ${victim}`).toEqual(expected)
      if ("instant" in interruptAt) {
        // On whole instants the victim has started exactly when the model says it would have.
        const modelStart = fifoStarts(max, 1000, stepCalls).get(victim)!
        expect(victimStart !== undefined, `victim ${victim} at ${interruptAt.instant}`).toBe(
          modelStart <= interruptAt.instant
        )
      }
      expect(probe.inFlight).toBe(0)
      expect(yield* readMetrics(name)).toMatchObject({ inFlight: 0, waiting: 0 })
      yield* expectFullCapacity(viaMiddleware(limited), max, name)
    }))

  it.effect("interrupting a caller at any instant leaks no permit and delays no one", () =>
    Effect.forEach(stepCalls, ({ id }) =>
      Effect.forEach(Array.from({ length: 7 }, (_, instant) => instant), (instant) =>
        runInterrupted(id, { instant })), { discard: true }))

  it.effect("interrupting a caller after any number of scheduler steps leaks no permit", () =>
    Effect.forEach(stepCalls, ({ id }) =>
      Effect.forEach(Array.from({ length: 5 }, (_, yields) => yields), (yields) =>
        runInterrupted(id, { yields })), { discard: true }))
})
