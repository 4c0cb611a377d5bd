/**
 * The retry middleware, case by case: which failures are retried and when (the Backoff policy and its
 * predicate), what the budget allows and refuses, that nested layers draw from the outermost call's budget
 * and only for that call, how a caller's deadline and a `timeout` above or below bound a retry sequence, and
 * that interrupting a call at any point leaves the budget as it was.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Data, Duration, Effect, Exit, Fiber, Metric, Option, Schedule, TestClock } from "effect"
import type * as Backoff from "../../../src/Backoff.js"
import { Invalid, Middleware, Timeout, Unavailable } from "keel"

const { retry, retryMetrics, stack, timeout, within } = Middleware
type RetryBudgetOptions = Middleware.RetryBudgetOptions

const constant = (millis: number, maxAttempts?: number): Backoff.Policy =>
  maxAttempts === undefined
    ? { base: Duration.millis(millis), factor: 1, max: Duration.millis(millis), jitter: "none" }
    : { base: Duration.millis(millis), factor: 1, max: Duration.millis(millis), jitter: "none", maxAttempts }

/**
 * A service that records when each attempt starts, waits `latency`, and fails with `failure(n)` on its
 * n-th attempt (1-based) while n ≤ `failures`; `running` counts attempts in progress.
 */
const scripted = <E>(options: {
  readonly failures: number
  readonly latency?: number
  readonly failure: (attempt: number) => E
}) => {
  const state = { startedAt: new Array<number>(), running: 0 }
  const service = (request: string) =>
    Effect.gen(function*() {
      state.startedAt.push(yield* Clock.currentTimeMillis)
      const attempt = state.startedAt.length
      state.running++
      yield* Effect.ensuring(
        options.latency ? Effect.sleep(Duration.millis(options.latency)) : Effect.void,
        Effect.sync(() => state.running--)
      )
      if (attempt <= options.failures) return yield* Effect.fail(options.failure(attempt))
      return `${request} after ${attempt}`
    })
  return { service, state }
}

const unavailable = (attempt: number) => new Unavailable({ reason: `attempt ${attempt}` })

/** The exit of a fiber that must have ended by now: one still running fails the test instead of hanging it. */
const ended = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
  Effect.gen(function*() {
    const polled = yield* Fiber.poll(fiber)
    if (Option.isNone(polled)) {
      yield* Fiber.interrupt(fiber)
      return expect.fail("the call should have ended by now")
    }
    return polled.value
  })

/** Runs `effect` in a fiber, lets the clock go on by `advance`, and returns its exit and when it ended. */
const runTimed = <A, E>(effect: Effect.Effect<A, E>, advance: Duration.DurationInput = "1 hour") =>
  Effect.gen(function*() {
    let endedAt = Number.NaN
    const fiber = yield* Effect.fork(
      Effect.ensuring(effect, Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => endedAt = now)))
    )
    yield* Duration.toMillis(Duration.decode(advance)) > 0 ? TestClock.adjust(advance) : Effect.yieldNow()
    const exit = yield* ended(fiber)
    return { exit, endedAt }
  })

/** The exit of `effect`, which must end without time passing. */
const immediately = <A, E>(effect: Effect.Effect<A, E>) => Effect.map(runTimed(effect, 0), ({ exit }) => exit)

const counted = (counter: Metric.Metric.Counter<number>) => Effect.map(Metric.value(counter), (state) => state.count)

describe("retry: schedule and predicate", () => {
  it.scoped("retries Unavailable on the Backoff policy's delays and returns the first success", () =>
    Effect.gen(function*() {
      const name = "retry-test-delays"
      const { service, state } = scripted({ failures: 3, failure: unavailable })
      const layer = yield* retry({
        backoff: { base: "100 millis", factor: 2, max: "1 second", jitter: "none" },
        budget: false,
        name
      })
      const { exit } = yield* runTimed(layer(service)("job"))
      expect(exit).toEqual(Exit.succeed("job after 4"))
      expect(state.startedAt).toEqual([0, 100, 300, 700])
      expect(yield* counted(retryMetrics(name).retries)).toBe(3)
    }))

  it.scoped("never retries Invalid, a defect, or an error the policy's retryOn refuses", () =>
    Effect.gen(function*() {
      const invalid = new Invalid({ reason: "bad input" })
      const rejected = scripted({ failures: 5, failure: () => invalid })
      const rejecting = yield* retry({ backoff: constant(10), budget: false })
      const rejectedExit = yield* immediately(rejecting(rejected.service)("job"))
      expect(rejected.state.startedAt).toHaveLength(1)
      // The very error the service failed with, not a copy or a wrapper.
      expect(Exit.isFailure(rejectedExit) && Cause.failureOption(rejectedExit.cause)).toEqual(Option.some(invalid))
      expect(Exit.isFailure(rejectedExit) && Option.getOrNull(Cause.failureOption(rejectedExit.cause))).toBe(invalid)

      let dyingAttempts = 0
      const dying = yield* immediately(rejecting(() => Effect.suspend(() => (dyingAttempts++, Effect.die("bug"))))("job"))
      expect(dyingAttempts).toBe(1)
      expect(Exit.isFailure(dying) && Cause.isDie(dying.cause)).toBe(true)

      class Remote extends Data.TaggedError("Remote")<{ readonly retryable: boolean; readonly attempt: number }> {}
      const remote = scripted({
        failures: 5,
        failure: (attempt) => new Remote({ retryable: attempt < 3, attempt })
      })
      const byRetryOn = yield* retry<Remote>({
        backoff: { ...constant(10), retryOn: (error) => error.retryable },
        budget: false
      })
      const { exit } = yield* runTimed(byRetryOn(remote.service)("job"))
      expect(remote.state.startedAt).toEqual([0, 10, 20])
      expect(exit).toEqual(Exit.fail(new Remote({ retryable: false, attempt: 3 })))
    }))

  it.scoped("after maxAttempts the call fails with its last error, unchanged", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 10, failure: unavailable, latency: 5 })
      const layer = yield* retry({ backoff: constant(10, 3), budget: false })
      const { exit } = yield* runTimed(layer(service)("job"))
      expect(state.startedAt).toEqual([0, 15, 30])
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 3" })))
    }))

  it.scoped("accepts any Schedule over the failures in place of a Backoff policy", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 10, failure: unavailable })
      const layer = yield* retry({ backoff: Schedule.addDelay(Schedule.recurs(2), () => "50 millis"), budget: false })
      const { exit } = yield* runTimed(layer(service)("job"))
      expect(state.startedAt).toEqual([0, 50, 100])
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 3" })))
    }))
})

describe("retry: budget", () => {
  it.scoped(
    "the reserve allows minPerSecond·windowSeconds retries a window; past it a call fails at once with its last error",
    () =>
      Effect.gen(function*() {
        const name = "retry-test-reserve"
        const { service, state } = scripted({ failures: 1_000, failure: unavailable })
        const layer = yield* retry({
          backoff: constant(10, 10),
          budget: { ratio: 0, minPerSecond: 1, window: "4 seconds" },
          name
        })
        const call = layer(service)

        const first = yield* runTimed(call("first"))
        // Four retries (reserve 1/s · 4 s), then refused without waiting the fifth delay.
        expect(state.startedAt).toEqual([0, 10, 20, 30, 40])
        expect(first.endedAt).toBe(40)
        expect(first.exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 5" })))
        expect(yield* counted(retryMetrics(name).budgetExhausted)).toBe(1)
        expect(yield* counted(retryMetrics(name).retries)).toBe(4)
      })
  )

  it.scoped("a refused retry returns at the instant of the failure, not after the delay", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 1_000, failure: unavailable })
      const layer = yield* retry({
        backoff: constant(500, 10),
        budget: { ratio: 0, minPerSecond: 1, window: "2 seconds" },
        name: "retry-test-refusal-time"
      })
      const { endedAt, exit } = yield* runTimed(layer(service)("job"), "1 second")
      expect(state.startedAt).toEqual([0, 500, 1000])
      expect(endedAt).toBe(1000)
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 3" })))
    }))

  it.scoped("retries are forgotten one bucket (window/10) after the window, so the reserve comes back", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 1_000, failure: unavailable })
      const layer = yield* retry({
        backoff: constant(10, 10),
        budget: { ratio: 0, minPerSecond: 1, window: "4 seconds" },
        name: "retry-test-expiry"
      })
      const attemptsOf = (request: string) =>
        Effect.gen(function*() {
          const before = state.startedAt.length
          yield* runTimed(layer(service)(request), "100 millis")
          return state.startedAt.length - before
        })
      expect(yield* attemptsOf("a")).toBe(5) // retries at 10..40 ms, all in the first 400 ms bucket
      // At 4399 ms the window (4 s) plus one bucket still holds them: refused at once, no time passes.
      yield* TestClock.setTime(4_399)
      const before = state.startedAt.length
      yield* immediately(layer(service)("b"))
      expect(state.startedAt.length - before).toBe(1)
      yield* TestClock.setTime(4_400)
      expect(yield* attemptsOf("c")).toBe(5)
    }))

  it.scoped("each call deposits: retries may add ratio·calls in the window", () =>
    Effect.gen(function*() {
      const name = "retry-test-ratio"
      const layer = yield* retry({
        backoff: constant(10, 10),
        budget: { ratio: 0.25, minPerSecond: 0, window: "10 seconds" },
        name
      })
      const healthy = layer((request: string) => Effect.succeed(request))
      yield* Effect.forEach(["1", "2", "3", "4", "5", "6", "7", "8"], healthy)
      const { service, state } = scripted({ failures: 1_000, failure: unavailable })
      const { exit } = yield* runTimed(layer(service)("ninth"))
      // 9 calls · 0.25 = 2.25: two retries fit, a third would make 3.
      expect(state.startedAt).toEqual([0, 10, 20])
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 3" })))
      expect(yield* counted(retryMetrics(name).budgetExhausted)).toBe(1)
    }))

  it.scoped("calls count for the whole window and stop counting when they leave it", () =>
    Effect.gen(function*() {
      // Four calls at instant 0, then one failing call at `instant`: how many attempts does it get?
      const attemptsAt = (instant: number) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const layer = yield* retry({
            backoff: Schedule.recurs(10),
            budget: { ratio: 1, minPerSecond: 0, window: "1 second" },
            name: "retry-test-calls-expire"
          })
          yield* Effect.forEach(["1", "2", "3", "4"], layer((request: string) => Effect.succeed(request)))
          yield* TestClock.setTime(instant)
          const { service, state } = scripted({ failures: 1_000, failure: unavailable })
          yield* immediately(layer(service)("failing"))
          return state.startedAt.length
        })
      // In the window (−1, 999]: five calls, five retries.
      expect(yield* attemptsAt(999)).toBe(6)
      // In the window (0, 1000] the calls of instant 0 are gone: one call, one retry.
      expect(yield* attemptsAt(1_000)).toBe(2)
    }))

  it.scoped("with budget false only the policy limits retries", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 1_000, failure: unavailable })
      const layer = yield* retry({ backoff: constant(1, 40), budget: false })
      yield* runTimed(layer(service)("job"))
      expect(state.startedAt).toHaveLength(40)
    }))

  it.scoped("stacked retrying layers share the outermost call's budget: 100 calls add 20 retries in all, not 20 a layer", () =>
    Effect.gen(function*() {
      const budget = { ratio: 0.2, minPerSecond: 0, window: "10 seconds" } as const
      const threeAttempts = Schedule.recurs(2)
      const outer = yield* retry({ backoff: threeAttempts, budget, name: "retry-test-outer" })
      const inner = yield* retry({ backoff: threeAttempts, budget, name: "retry-test-inner" })
      const unbudgetedOuter = yield* retry({ backoff: threeAttempts, budget: false })
      const unbudgetedInner = yield* retry({ backoff: threeAttempts, budget: false })
      const calls = Array.from({ length: 100 }, (_, index) => `call-${index}`)

      const { service, state } = scripted({ failures: Number.POSITIVE_INFINITY, failure: unavailable })
      yield* Effect.forEach(calls, (request) => immediately(stack(outer, inner)(service)(request)))
      // Each call deposits once, into the outer budget, and the retries of both layers withdraw from it.
      expect(state.startedAt).toHaveLength(100 + 0.2 * 100)
      const retriesCounted = (yield* counted(retryMetrics("retry-test-outer").retries)) +
        (yield* counted(retryMetrics("retry-test-inner").retries))
      expect(retriesCounted).toBe(20)

      const storm = scripted({ failures: Number.POSITIVE_INFINITY, failure: unavailable })
      yield* Effect.forEach(calls, (request) =>
        immediately(stack(unbudgetedOuter, unbudgetedInner)(storm.service)(request)))
      expect(storm.state.startedAt).toHaveLength(900)
    }))
})

describe("retry: one budget for nested layers", () => {
  const window = "10 seconds"
  const layerBudgets = {
    outer: { ratio: 0.1, minPerSecond: 1, window },
    middle: { ratio: 0.5, minPerSecond: 5, window },
    inner: { ratio: 1, minPerSecond: 10, window }
  } as const
  type LayerName = keyof typeof layerBudgets
  const layerNames: ReadonlyArray<LayerName> = ["outer", "middle", "inner"]

  /** The retries a budget allows in one window: minPerSecond · windowSeconds + ratio · calls. */
  const allowance = (budget: RetryBudgetOptions, calls: number) =>
    budget.minPerSecond * Duration.toSeconds(budget.window) + budget.ratio * calls

  /** Six attempts a layer and no delay: three nested layers would make 6³ = 216 attempts a call. */
  const aggressive = Schedule.recurs(5)

  const layersNamed = (prefix: string) =>
    Effect.all({
      outer: retry({ backoff: aggressive, budget: layerBudgets.outer, name: `${prefix}-outer` }),
      middle: retry({ backoff: aggressive, budget: layerBudgets.middle, name: `${prefix}-middle` }),
      inner: retry({ backoff: aggressive, budget: layerBudgets.inner, name: `${prefix}-inner` })
    })

  const calls = 200

  /**
   * Makes `calls` calls through `layer`, ten every 200 ms (4 s: all in one window), over a dependency that
   * always fails at once, and returns the retries the dependency saw.
   */
  const retriesThrough = <EAdd>(layer: Middleware.Middleware<EAdd>) =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: Number.POSITIVE_INFINITY, failure: unavailable })
      const call = layer(service)
      for (let index = 0; index < calls; index++) {
        if (index > 0 && index % 10 === 0) yield* TestClock.adjust("200 millis")
        yield* Effect.exit(call(`call-${index}`))
      }
      return state.startedAt.length - calls
    })

  it.scoped("three nested layers over a failing dependency retry within the outermost budget; side by side each keeps its own", () =>
    Effect.gen(function*() {
      const nested = yield* layersNamed("retry-test-nested")
      const nestedRetries = yield* retriesThrough(stack(nested.outer, nested.middle, nested.inner))
      // 10 + 0.1 · 200 = 30: the whole outer allowance (the schedules never ran out), and not one retry more.
      expect(nestedRetries).toBeLessThanOrEqual(allowance(layerBudgets.outer, calls))
      expect(nestedRetries).toBeGreaterThan(allowance(layerBudgets.outer, calls) - 1)
      let retriesCounted = 0
      for (const layer of layerNames) {
        const metrics = retryMetrics(`retry-test-nested-${layer}`)
        retriesCounted += yield* counted(metrics.retries)
        // Every call ended refused, and each layer, wanting to retry in turn, counted the refusal.
        expect(yield* counted(metrics.budgetExhausted), layer).toBe(calls)
      }
      expect(retriesCounted).toBe(nestedRetries)

      // The same layers, each over the dependency on its own, one after another: each budget governs its calls.
      const sideBySide = yield* layersNamed("retry-test-side-by-side")
      for (const layer of layerNames) {
        const retries = yield* retriesThrough(sideBySide[layer])
        expect(retries, layer).toBeLessThanOrEqual(allowance(layerBudgets[layer], calls))
        expect(retries, layer).toBeGreaterThan(allowance(layerBudgets[layer], calls) - 1)
      }
    }))

  /** No retry is ever allowed under this budget. */
  const closedBudget = { ratio: 0, minPerSecond: 0, window } as const
  /** Room for 100 retries: a call through it alone, with three attempts a call, makes all three. */
  const roomyBudget = { ratio: 0, minPerSecond: 10, window } as const

  /** The attempts one call through `layer` makes over a service that always fails at once. */
  const attemptsThrough = <EAdd>(layer: Middleware.Middleware<EAdd>) =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: Number.POSITIVE_INFINITY, failure: unavailable })
      yield* Effect.exit(layer(service)("probe"))
      return state.startedAt.length
    })

  it.scoped("the budget governs only the call that installed it: not calls after it, beside it, or after its interruption", () =>
    Effect.gen(function*() {
      const closed = yield* retry({ backoff: Schedule.recurs(3), budget: closedBudget, name: "retry-test-closed" })
      const probe = yield* retry({ backoff: Schedule.recurs(2), budget: roomyBudget, name: "retry-test-probe" })
      const beneathClosed = stack(closed, probe)

      expect(yield* attemptsThrough(beneathClosed)).toBe(1)
      expect(yield* counted(retryMetrics("retry-test-probe").budgetExhausted)).toBe(1)
      expect(yield* counted(retryMetrics("retry-test-closed").budgetExhausted)).toBe(1)
      // After a call that failed, and after one that succeeded, the probe's own budget governs again.
      expect(yield* attemptsThrough(probe)).toBe(3)
      expect(yield* beneathClosed((request: string) => Effect.succeed(request))("healthy")).toBe("healthy")
      expect(yield* attemptsThrough(probe)).toBe(3)

      // Beside a call still in progress (its first attempt takes 100 ms).
      const slow = scripted({ failures: Number.POSITIVE_INFINITY, failure: unavailable, latency: 100 })
      const inProgress = yield* Effect.fork(beneathClosed(slow.service)("slow"))
      yield* TestClock.adjust("50 millis")
      expect(slow.state.running).toBe(1)
      expect(yield* attemptsThrough(probe)).toBe(3)
      yield* TestClock.adjust("50 millis")
      expect(yield* ended(inProgress)).toEqual(Exit.fail(new Unavailable({ reason: "attempt 1" })))

      // In the same fiber, after the call was interrupted mid-attempt (the fiber goes on, uninterruptible).
      let attemptsAfterInterruption = 0
      const interrupted = scripted({ failures: Number.POSITIVE_INFINITY, failure: unavailable, latency: 100 })
      const survivor = yield* Effect.fork(Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(
          Effect.exit(restore(beneathClosed(interrupted.service)("interrupted"))),
          Effect.map(attemptsThrough(probe), (attempts) => attemptsAfterInterruption = attempts)
        )
      ))
      yield* TestClock.adjust("50 millis")
      yield* Fiber.interrupt(survivor)
      expect(interrupted.state.running).toBe(0)
      expect(attemptsAfterInterruption).toBe(3)
    }))

  it.scoped("fibers a call forks, a timeout's among them, draw from the call's budget", () =>
    Effect.gen(function*() {
      const closed = yield* retry({ backoff: Schedule.recurs(3), budget: closedBudget })
      const probe = yield* retry({ backoff: Schedule.recurs(2), budget: roomyBudget })
      const forking: Middleware.Middleware = (service) => (request) =>
        Effect.flatMap(Effect.fork(service(request)), Fiber.join)

      expect(yield* attemptsThrough(stack(closed, forking, probe))).toBe(1)
      expect(yield* attemptsThrough(stack(closed, yield* timeout({ after: "1 second" }), probe))).toBe(1)
      expect(yield* attemptsThrough(stack(forking, probe))).toBe(3)
    }))

  it.scoped("a layer with budget false withdraws from an enclosing budget; above a budgeted layer it leaves each attempt to it", () =>
    Effect.gen(function*() {
      const name = "retry-test-unbudgeted"
      const unbudgeted = yield* retry({ backoff: Schedule.recurs(2), budget: false, name })
      const closed = yield* retry({ backoff: Schedule.recurs(3), budget: closedBudget })
      expect(yield* attemptsThrough(stack(closed, unbudgeted))).toBe(1)
      expect(yield* counted(retryMetrics(name).budgetExhausted)).toBe(1)

      // Two retries in the window under `scarce`. Above it, `unbudgeted` makes three calls of `scarce`: the
      // first spends the two retries, the others are refused theirs; `unbudgeted`'s own retries are not charged.
      const scarce = yield* retry({ backoff: Schedule.recurs(5), budget: { ratio: 0, minPerSecond: 0.2, window } })
      expect(yield* attemptsThrough(stack(unbudgeted, scarce))).toBe(3 + 2)
    }))
})

describe("retry: deadline and timeouts", () => {
  it.scoped("never sleeps past the caller's deadline: it stops with its last error when the next attempt could not start in time", () =>
    Effect.gen(function*() {
      const name = "retry-test-deadline"
      const { service, state } = scripted({ failures: 1_000, failure: unavailable })
      const layer = yield* retry({
        backoff: { base: "100 millis", factor: 2, max: "1 second", jitter: "none" },
        budget: false,
        name
      })
      const { endedAt, exit } = yield* runTimed(within("300 millis")(layer(service)("job")), "100 millis")
      // Failed at 100 ms; the next delay (200 ms) would end at the deadline, leaving the attempt no time.
      expect(state.startedAt).toEqual([0, 100])
      expect(endedAt).toBe(100)
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 2" })))
      expect(yield* counted(retryMetrics(name).deadlineExhausted)).toBe(1)
    }))

  it.scoped("stack(timeout(t), retry) bounds the whole retry sequence by t", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 1_000, failure: unavailable, latency: 130 })
      const layer = yield* retry({ backoff: constant(100), budget: false })
      const { endedAt, exit } = yield* runTimed(stack(yield* timeout({ after: "1 second" }), layer)(service)("job"), "1 second")
      expect(endedAt).toBe(1000)
      expect(exit).toEqual(Exit.fail(new Timeout({ after: Duration.decode("1 second") })))
      expect(state.startedAt).toEqual([0, 230, 460, 690, 920])
      expect(state.running).toBe(0)
    }))

  it.scoped("stack(retry, timeout(t)) applies t to each attempt, and each Timeout is retried", () =>
    Effect.gen(function*() {
      const { service, state } = scripted({ failures: 0, failure: unavailable, latency: 500 })
      const layer = yield* retry({ backoff: constant(100, 3), budget: false })
      const { endedAt, exit } = yield* runTimed(stack(layer, yield* timeout({ after: "200 millis" }))(service)("job"))
      expect(endedAt).toBe(800)
      expect(exit).toEqual(Exit.fail(new Timeout({ after: Duration.decode("200 millis") })))
      expect(state.startedAt).toEqual([0, 300, 600])
    }))
})

describe("retry: interruption and options", () => {
  it.effect("interrupting a call at any point withdraws nothing it did not retry, and leaves no attempt running", () =>
    Effect.gen(function*() {
      // Attempts take 50 ms, delays 100 ms: attempts run over [0, 50), [150, 200), [300, 350); steps of 25 ms
      // interrupt inside an attempt, at its failure, inside a delay and at the very instant of a retry.
      for (let steps = 0; steps <= 14; steps++) {
        yield* Effect.scoped(Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const layer = yield* retry({
            backoff: constant(100),
            budget: { ratio: 0, minPerSecond: 0.5, window: "8 seconds" },
            name: `retry-test-interrupt-${steps}`
          })
          const { service, state } = scripted({ failures: 1_000, failure: unavailable, latency: 50 })
          const fiber = yield* Effect.fork(layer(service)("interrupted"))
          for (let step = 0; step < steps; step++) yield* TestClock.adjust("25 millis")
          yield* Effect.yieldNow()
          yield* Fiber.interrupt(fiber)
          expect(state.running, `after ${steps} steps`).toBe(0)
          const retriesTaken = state.startedAt.length - 1

          // The same middleware, hence the same budget, over a service failing at once.
          const probe = scripted({ failures: 1_000, failure: unavailable })
          yield* runTimed(layer(probe.service)("probe"), "1 second")
          // The reserve is 4 retries in the window; the probe gets exactly what the interrupted call left.
          expect(probe.state.startedAt.length, `after ${steps} steps`).toBe(1 + 4 - retriesTaken)
        }))
      }
    }))

  it.scoped("invalid options are defects naming the option", () =>
    Effect.gen(function*() {
      const defectOf = (options: Parameters<typeof retry>[0]) =>
        Effect.map(Effect.exit(retry(options)), (exit) =>
          Exit.isFailure(exit) ? Option.getOrUndefined(Cause.dieOption(exit.cause)) : undefined)
      const budget = { ratio: 0.2, minPerSecond: 10, window: "10 seconds" } as const
      const cases: ReadonlyArray<RetryBudgetOptions> = [
        { ...budget, ratio: -0.1 },
        { ...budget, ratio: Number.NaN },
        { ...budget, minPerSecond: -1 },
        { ...budget, window: "0 millis" },
        { ...budget, window: "soon" as Duration.DurationInput }
      ]
      for (const invalid of cases) {
        const defect = yield* defectOf({ backoff: constant(10), budget: invalid })
        expect(defect).toBeInstanceOf(Cause.IllegalArgumentException)
        expect(String((defect as Error).message)).toMatch(/^Middleware\.retry: budget\.(ratio|minPerSecond|window)/)
      }
      const badPolicy = yield* defectOf({ backoff: { base: "0 millis", max: "1 second" } })
      expect(badPolicy).toBeInstanceOf(Cause.IllegalArgumentException)
    }))
})
