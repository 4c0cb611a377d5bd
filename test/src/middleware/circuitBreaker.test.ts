/**
 * circuitBreaker behaviour a caller relies on, case by case: when each policy opens, what an open and a
 * half-open breaker refuse and with which `retryAfter`, what counts as a failure, isolate / reset, the
 * `changes` stream, metrics, use in a `stack`, and option validation. All time is TestClock's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Deferred, Duration, Effect, Exit, Fiber, Metric, Option, Stream, TestClock } from "effect"
import { CircuitOpen, Middleware, Timeout } from "keel"

const { circuitBreaker, circuitBreakerMetrics, CircuitState, stack } = Middleware
type CircuitBreaker<E = unknown> = Middleware.CircuitBreaker<E>
type CircuitBreakerOptions<E = unknown> = Middleware.CircuitBreakerOptions<E>
type CircuitState = Middleware.CircuitState

class Boom extends Data.TaggedError("Boom")<{}> {}
class NotFound extends Data.TaggedError("NotFound")<{}> {}

/** How a call to the test service ends. */
type Ending = "ok" | "fail" | "notFound" | "die"

const endWith = (ending: Ending): Effect.Effect<string, Boom | NotFound> => {
  switch (ending) {
    case "ok":
      return Effect.succeed("done")
    case "fail":
      return Effect.fail(new Boom())
    case "notFound":
      return Effect.fail(new NotFound())
    case "die":
      return Effect.die("bug in the client")
  }
}

let breakerCount = 0
/** A fresh name per breaker, so metrics of one test never mix with another's. */
const uniqueName = (label: string) => `${label}-${++breakerCount}`

/**
 * A breaker over a service that ends as asked; `invocations` counts the calls that reached the service.
 * `gated` calls wait for the test to choose their ending, so several can be in flight at once.
 */
const setup = (options: Omit<CircuitBreakerOptions<Boom | NotFound>, "name">) =>
  Effect.gen(function*() {
    const name = uniqueName("breaker")
    const breaker = yield* circuitBreaker<Boom | NotFound>({ name, ...options })
    const counter = { invocations: 0 }
    const immediate = breaker((ending: Ending) =>
      Effect.suspend(() => {
        counter.invocations++
        return endWith(ending)
      })
    )
    const call = (ending: Ending) => Effect.exit(immediate(ending))
    const gatedService = breaker(
      (request: { readonly started: Deferred.Deferred<void>; readonly gate: Deferred.Deferred<Ending> }) =>
        Effect.suspend(() => {
          counter.invocations++
          return Deferred.succeed(request.started, undefined).pipe(
            Effect.zipRight(Deferred.await(request.gate)),
            Effect.flatMap(endWith)
          )
        })
    )
    /** Starts a call that waits for `finish`; tells whether the breaker let it through. */
    const start = Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<Ending>()
      const fiber = yield* Effect.forkScoped(gatedService({ started, gate }))
      yield* Effect.raceFirst(Deferred.await(started), Effect.asVoid(Fiber.await(fiber)))
      return {
        admitted: yield* Deferred.isDone(started),
        fiber,
        finish: (ending: Ending) => Effect.zipRight(Deferred.succeed(gate, ending), Fiber.await(fiber))
      }
    })
    return { name, breaker, counter, call, start }
  })

const rejection = (exit: Exit.Exit<string, Boom | NotFound | CircuitOpen>) =>
  Exit.match(exit, {
    onSuccess: () => undefined,
    onFailure: (cause) => Option.getOrUndefined(Cause.failureOption(cause))
  })

const show = (state: CircuitState) => (state._tag === "Open" ? `Open(${state.until})` : state._tag)

const repeat = (times: number, effect: Effect.Effect<unknown>) => Effect.repeatN(effect, times - 1)

/** Yields until `done()` holds (at most `limit` times), so a missing event fails an assertion, not the run. */
const yieldUntil = (done: () => boolean, limit = 200) =>
  Effect.gen(function*() {
    for (let i = 0; i < limit && !done(); i++) yield* Effect.yieldNow()
  })

/** Records every state `changes` emits, from now on. */
const recordChanges = (breaker: CircuitBreaker<Boom | NotFound>) =>
  Effect.gen(function*() {
    const seen: Array<string> = []
    const fiber = yield* Effect.forkScoped(
      Stream.runForEach(breaker.changes, (state) => Effect.sync(() => seen.push(show(state))))
    )
    yield* yieldUntil(() => seen.length > 0)
    return { seen, fiber }
  })

const consecutive = (failures: number) => ({ kind: "consecutive", failures }) as const

describe("circuitBreaker, consecutive policy", () => {
  it.scoped("opens after `failures` failures in a row; a success in between restarts the run", () =>
    Effect.gen(function*() {
      const { breaker, call, counter, name } = yield* setup({ policy: consecutive(3), openFor: "10 seconds" })
      for (const ending of ["fail", "fail", "ok", "fail", "fail"] as const) yield* call(ending)
      expect(show(yield* breaker.state)).toBe("Closed")
      expect((yield* breaker.stats).consecutiveFailures).toBe(2)
      yield* TestClock.adjust("1 second")
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Open(11000)")
      const refused = yield* call("ok")
      expect(rejection(refused)).toEqual(
        new CircuitOpen({ breaker: name, state: "Open", retryAfter: Duration.seconds(10) })
      )
      expect(counter.invocations).toBe(6)
    }))

  it.scoped("an open breaker refuses every call until openFor has passed, with retryAfter counting down", () =>
    Effect.gen(function*() {
      const { breaker, call, counter } = yield* setup({ policy: consecutive(1), openFor: "10 seconds" })
      yield* call("fail")
      yield* TestClock.adjust("4 seconds")
      expect(rejection(yield* call("ok"))).toMatchObject({ retryAfter: Duration.seconds(6) })
      yield* TestClock.adjust(Duration.millis(5999))
      expect(rejection(yield* call("ok"))).toMatchObject({ state: "Open", retryAfter: Duration.millis(1) })
      expect(counter.invocations).toBe(1)
      expect((yield* breaker.stats).rejected).toBe(2)
      yield* TestClock.adjust(Duration.millis(1))
      expect(show(yield* breaker.state)).toBe("HalfOpen")
      expect(yield* call("ok")).toEqual(Exit.succeed("done"))
      expect(show(yield* breaker.state)).toBe("Closed")
    }))

  it.scoped("half-open admits trialCalls trials at once, refuses the rest, and closes after successesToClose", () =>
    Effect.gen(function*() {
      const { breaker, call, name, start } = yield* setup({
        policy: consecutive(1),
        openFor: "10 seconds",
        trialCalls: 2,
        successesToClose: 3
      })
      yield* call("fail")
      yield* TestClock.adjust("10 seconds")
      const first = yield* start
      const second = yield* start
      const third = yield* start
      expect([first.admitted, second.admitted, third.admitted]).toEqual([true, true, false])
      expect(rejection(yield* Fiber.await(third.fiber))).toEqual(
        new CircuitOpen({ breaker: name, state: "HalfOpen", retryAfter: Duration.seconds(10) })
      )
      yield* first.finish("ok")
      expect(yield* breaker.stats).toMatchObject({ trialsInFlight: 1, trialSuccesses: 1 })
      // The finished trial's slot is free again.
      const fourth = yield* start
      expect(fourth.admitted).toBe(true)
      expect((yield* start).admitted).toBe(false)
      expect((yield* Metric.value(circuitBreakerMetrics(name).rejections("half-open"))).count).toBe(2)
      yield* second.finish("ok")
      expect(show(yield* breaker.state)).toBe("HalfOpen")
      yield* fourth.finish("ok")
      expect(show(yield* breaker.state)).toBe("Closed")
      expect(yield* breaker.stats).toMatchObject({ trialsInFlight: 0, trialSuccesses: 0 })
    }))

  it.scoped("a trial failure opens the breaker again for another openFor", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ policy: consecutive(2), openFor: "10 seconds", successesToClose: 2 })
      yield* repeat(2, call("fail"))
      yield* TestClock.adjust("10 seconds")
      yield* call("ok")
      expect(yield* breaker.stats).toMatchObject({ state: CircuitState.HalfOpen(), trialSuccesses: 1 })
      yield* TestClock.adjust("3 seconds")
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Open(23000)")
      expect(rejection(yield* call("ok"))).toMatchObject({ retryAfter: Duration.seconds(10) })
    }))

  it.scoped("an outcome counts only in the state its call was admitted in", () =>
    Effect.gen(function*() {
      const { breaker, call, start } = yield* setup({ policy: consecutive(1), openFor: "10 seconds" })
      const slow = yield* start
      yield* call("fail")
      yield* TestClock.adjust("10 seconds")
      yield* call("ok")
      expect(show(yield* breaker.state)).toBe("Closed")
      // Admitted before the breaker opened: its failure is not counted by the closed breaker of now.
      yield* slow.finish("fail")
      expect(show(yield* breaker.state)).toBe("Closed")
      const beforeReset = yield* start
      yield* breaker.reset
      yield* beforeReset.finish("fail")
      expect(show(yield* breaker.state)).toBe("Closed")
    }))
})

describe("circuitBreaker, what counts", () => {
  it.scoped("a defect counts as nothing by default, and as a failure with countDefects", () =>
    Effect.gen(function*() {
      const byDefault = yield* setup({ policy: consecutive(2), openFor: "10 seconds" })
      yield* byDefault.call("fail")
      yield* byDefault.call("die")
      expect((yield* byDefault.breaker.stats).consecutiveFailures).toBe(1)
      yield* byDefault.call("fail")
      expect(show(yield* byDefault.breaker.state)).toBe("Open(10000)")

      const counting = yield* setup({ policy: consecutive(2), openFor: "10 seconds", countDefects: true })
      yield* counting.call("die")
      yield* counting.call("die")
      expect(show(yield* counting.breaker.state)).toBe("Open(10000)")
    }))

  it.scoped("a typed failure isFailure rejects counts as a success: the service answered", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({
        policy: consecutive(2),
        openFor: "10 seconds",
        isFailure: (error) => error._tag === "Boom"
      })
      yield* call("fail")
      yield* call("notFound")
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Closed")
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Open(10000)")
      yield* TestClock.adjust("10 seconds")
      expect(rejection(yield* call("notFound"))).toEqual(new NotFound())
      expect(show(yield* breaker.state)).toBe("Closed")
    }))

  it.scoped("an interruption never counts, closed or half-open, and frees the trial slot", () =>
    Effect.gen(function*() {
      const { breaker, call, start } = yield* setup({ policy: consecutive(1), openFor: "10 seconds" })
      const closedCall = yield* start
      yield* Fiber.interrupt(closedCall.fiber)
      expect(yield* breaker.stats).toMatchObject({ state: CircuitState.Closed(), consecutiveFailures: 0 })
      yield* call("fail")
      yield* TestClock.adjust("10 seconds")
      const trial = yield* start
      expect((yield* start).admitted).toBe(false)
      yield* Fiber.interrupt(trial.fiber)
      expect(yield* breaker.stats).toMatchObject({ state: CircuitState.HalfOpen(), trialsInFlight: 0 })
      expect((yield* start).admitted).toBe(true)
    }))
})

describe("circuitBreaker, rate policy", () => {
  const rate = (minimumCalls: number, failureRate: number) =>
    ({ kind: "rate", window: "10 seconds", minimumCalls, failureRate }) as const

  it.scoped("opens once at least minimumCalls calls are in the window and failureRate of them failed", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ policy: rate(4, 0.5), openFor: "5 seconds" })
      yield* call("fail")
      yield* call("fail")
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Closed") // 3 calls: under minimumCalls
      yield* call("ok")
      expect(show(yield* breaker.state)).toBe("Open(5000)") // 3 of 4 failed

      const healthy = yield* setup({ policy: rate(4, 0.5), openFor: "5 seconds" })
      for (const ending of ["ok", "ok", "fail", "ok", "ok", "fail"] as const) yield* healthy.call(ending)
      expect(yield* healthy.breaker.stats).toMatchObject({ windowCalls: 6, windowFailures: 2 })
      expect(show(yield* healthy.breaker.state)).toBe("Closed")
      yield* healthy.call("fail")
      expect(show(yield* healthy.breaker.state)).toBe("Closed") // 3 of 7
      yield* healthy.call("fail")
      expect(show(yield* healthy.breaker.state)).toBe("Open(5000)") // 4 of 8
    }))

  it.scoped("calls older than the window stop counting", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ policy: rate(4, 0.75), openFor: "5 seconds" })
      yield* repeat(3, call("fail"))
      yield* TestClock.adjust(Duration.millis(9999))
      expect((yield* breaker.stats).windowCalls).toBe(3)
      yield* TestClock.adjust(Duration.millis(1))
      expect((yield* breaker.stats).windowCalls).toBe(0)
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Closed") // 1 call in the window, not 4
      yield* TestClock.adjust("4 seconds")
      yield* repeat(2, call("fail"))
      yield* call("ok")
      expect(show(yield* breaker.state)).toBe("Open(19000)") // 3 of 4 failed within 10 s
    }))

  it.scoped("closing after a trial starts the window afresh", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ policy: rate(2, 0.5), openFor: "5 seconds" })
      yield* call("ok")
      yield* call("fail")
      yield* TestClock.adjust("5 seconds")
      yield* call("ok")
      expect(yield* breaker.stats).toMatchObject({ state: CircuitState.Closed(), windowCalls: 0 })
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Closed")
    }))
})

describe("circuitBreaker, isolate and reset", () => {
  it.scoped("isolate refuses every call until reset, whatever the time; reset closes with counters cleared", () =>
    Effect.gen(function*() {
      const { breaker, call, counter, name } = yield* setup({ policy: consecutive(2), openFor: "10 seconds" })
      yield* call("fail")
      yield* breaker.isolate
      const refused = rejection(yield* call("ok"))
      expect(refused).toEqual(new CircuitOpen({ breaker: name, state: "Isolated", retryAfter: Duration.infinity }))
      expect((refused as CircuitOpen).message).toBe(`circuit ${name} is isolated until reset`)
      yield* TestClock.adjust("1 day")
      expect(show(yield* breaker.state)).toBe("Isolated")
      expect(rejection(yield* call("ok"))).toMatchObject({ state: "Isolated" })
      expect(counter.invocations).toBe(1)
      yield* breaker.reset
      expect(yield* breaker.stats).toMatchObject({ state: CircuitState.Closed(), consecutiveFailures: 0 })
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Closed") // the failure before isolate was cleared
    }))

  it.scoped("reset closes an open breaker at once and clears a closed breaker's counters", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ policy: consecutive(2), openFor: "10 seconds" })
      yield* repeat(2, call("fail"))
      expect(show(yield* breaker.state)).toBe("Open(10000)")
      yield* breaker.reset
      expect(yield* call("ok")).toEqual(Exit.succeed("done"))
      yield* call("fail")
      yield* breaker.reset
      yield* call("fail")
      expect(show(yield* breaker.state)).toBe("Closed")
      expect((yield* breaker.stats).consecutiveFailures).toBe(1)
    }))
})

describe("circuitBreaker, observing it", () => {
  it.scoped("changes shows the current state, then every transition in order", () =>
    Effect.gen(function*() {
      const { breaker, call } = yield* setup({ policy: consecutive(1), openFor: "10 seconds" })
      const { seen } = yield* recordChanges(breaker)
      yield* call("fail") // Open until 10 s
      yield* TestClock.adjust("10 seconds")
      yield* call("fail") // observed half-open, the trial fails: Open until 20 s
      yield* TestClock.adjust("10 seconds")
      yield* breaker.state // reading the state observes the time is up
      yield* call("ok")
      yield* breaker.isolate
      yield* breaker.isolate
      yield* breaker.reset
      yield* breaker.reset
      const expected = ["Closed", "Open(10000)", "HalfOpen", "Open(20000)", "HalfOpen", "Closed", "Isolated", "Closed"]
      yield* yieldUntil(() => seen.length >= expected.length)
      expect(seen).toEqual(expected)
      expect((yield* breaker.stats).transitions).toBe(expected.length - 1)

      const late = yield* recordChanges(breaker)
      yield* breaker.isolate
      yield* yieldUntil(() => late.seen.length >= 2)
      expect(late.seen).toEqual(["Closed", "Isolated"])
    }))

  it.effect("changes ends when the breaker's Scope closes", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const recorder = yield* Effect.scoped(
        Effect.gen(function*() {
          const { breaker, call } = yield* setup({ policy: consecutive(1), openFor: "1 second" })
          const fiber = yield* Effect.fork(
            Stream.runForEach(breaker.changes, (state) => Effect.sync(() => seen.push(show(state))))
          )
          yield* yieldUntil(() => seen.length > 0)
          yield* call("fail")
          return fiber
        })
      )
      yield* yieldUntil(() => recorder.unsafePoll() !== null)
      expect(recorder.unsafePoll()).toEqual(Exit.void)
      expect(seen).toEqual(["Closed", "Open(1000)"])
    }))

  it.scoped("metrics: a state gauge, rejections by reason and transitions by edge", () =>
    Effect.gen(function*() {
      const { breaker, call, name } = yield* setup({ policy: consecutive(1), openFor: "10 seconds" })
      const metrics = circuitBreakerMetrics(name)
      const gauge = Effect.map(Metric.value(metrics.state), (state) => state.value)
      expect(yield* gauge).toBe(0)
      yield* call("fail")
      expect(yield* gauge).toBe(2)
      yield* repeat(2, call("ok"))
      expect((yield* Metric.value(metrics.rejections("open"))).count).toBe(2)
      yield* TestClock.adjust("10 seconds")
      expect(yield* gauge).toBe(2) // nothing observed the time yet
      yield* breaker.state
      expect(yield* gauge).toBe(1)
      yield* breaker.isolate
      expect(yield* gauge).toBe(3)
      yield* call("ok")
      expect((yield* Metric.value(metrics.rejections("isolated"))).count).toBe(1)
      yield* breaker.reset
      expect(yield* gauge).toBe(0)
      const edges = [
        ["Closed", "Open"],
        ["Open", "HalfOpen"],
        ["HalfOpen", "Isolated"],
        ["Isolated", "Closed"],
        ["HalfOpen", "Closed"]
      ] as const
      const counts = yield* Effect.forEach(edges, ([from, to]) =>
        Effect.map(Metric.value(metrics.transitions(from, to)), (counter) => counter.count))
      expect(counts).toEqual([1, 1, 1, 1, 0])
    }))

  it("CircuitOpen says why and when to come back", () => {
    expect(new CircuitOpen({ breaker: "db", state: "Open", retryAfter: Duration.seconds(3) }).message)
      .toBe("circuit db is open (retry after 3s)")
    expect(new CircuitOpen({ breaker: "db", state: "HalfOpen", retryAfter: Duration.seconds(30) }).message)
      .toBe("circuit db is half-open with every trial slot taken (retry after 30s)")
  })
})

describe("circuitBreaker, in a stack", () => {
  it.scoped("a hung trial bounded by a timeout below the breaker fails, and the breaker opens again", () =>
    Effect.gen(function*() {
      const breaker = yield* circuitBreaker({
        name: uniqueName("stacked"),
        policy: consecutive(1),
        openFor: "10 seconds"
      })
      const healthy = { now: false }
      const service = stack(breaker, yield* Middleware.timeout({ after: "1 second" }))((_: string) =>
        healthy.now ? Effect.succeed("pong") : Effect.never
      )
      const first = yield* Effect.fork(service("ping"))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.await(first)).toEqual(Exit.fail(new Timeout({ after: Duration.seconds(1) })))
      expect(show(yield* breaker.state)).toBe("Open(11000)")
      yield* TestClock.adjust("10 seconds")
      const trial = yield* Effect.fork(service("ping"))
      yield* TestClock.adjust("1 second")
      yield* Fiber.await(trial)
      expect(show(yield* breaker.state)).toBe("Open(22000)")
      yield* TestClock.adjust("10 seconds")
      healthy.now = true
      expect(yield* service("ping")).toBe("pong")
      expect(show(yield* breaker.state)).toBe("Closed")
    }))
})

describe("circuitBreaker, options", () => {
  const diesWith = (options: CircuitBreakerOptions, fragment: string) =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(circuitBreaker(options)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      if (Exit.isFailure(exit)) {
        const defect = Cause.squash(exit.cause)
        expect(defect).toBeInstanceOf(Cause.IllegalArgumentException)
        expect((defect as Error).message).toMatch(/^Middleware\.circuitBreaker: /)
        expect(Cause.pretty(exit.cause)).toContain(fragment)
      }
    })

  it.effect("invalid options are a programming error: the constructor dies saying which", () =>
    Effect.gen(function*() {
      const base = { policy: consecutive(1), openFor: "1 second" } as const
      yield* diesWith({ ...base, policy: consecutive(0) }, "policy.failures")
      yield* diesWith({ ...base, openFor: 0 }, "openFor")
      yield* diesWith({ ...base, openFor: Duration.infinity }, "openFor")
      yield* diesWith({ ...base, trialCalls: 1.5 }, "trialCalls")
      yield* diesWith({ ...base, successesToClose: 0 }, "successesToClose")
      const rate = { kind: "rate", window: "1 second", minimumCalls: 1, failureRate: 0.5 } as const
      yield* diesWith({ ...base, policy: { ...rate, failureRate: 0 } }, "failureRate")
      yield* diesWith({ ...base, policy: { ...rate, failureRate: 1.5 } }, "failureRate")
      yield* diesWith({ ...base, policy: { ...rate, minimumCalls: 0 } }, "minimumCalls")
      yield* diesWith({ ...base, policy: { ...rate, window: "0 millis" } }, "policy.window")
    }))
})
