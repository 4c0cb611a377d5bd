/**
 * Properties of circuitBreaker under generated sequences of operations — calls started and later ended
 * (success, counted failure, uncounted typed failure, defect, interruption), Clock advances, isolate and
 * reset — for both policies, run through the real middleware under TestClock and checked step by step
 * against a reference model of the state machine written here from the specification. Then
 * interrupt-at-every-step: trials interrupted at any point leave every trial slot free.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  FastCheck as fc,
  Fiber,
  Metric,
  Option,
  Stream,
  TestClock
} from "effect"
import { CircuitOpen, Middleware } from "keel"
import { PropertyRuns } from "keel/testing"

const { circuitBreaker, circuitBreakerMetrics } = Middleware
type CircuitBreaker<E = unknown> = Middleware.CircuitBreaker<E>
type CircuitPolicy = Middleware.CircuitPolicy
type CircuitState = Middleware.CircuitState

class Boom extends Data.TaggedError("Boom")<{}> {}
class NotFound extends Data.TaggedError("NotFound")<{}> {}

/** How a started call ends: `notFound` is a typed failure the breaker's `isFailure` does not count. */
type Ending = "ok" | "fail" | "notFound" | "die" | "interrupt"

type Operation =
  /** `times` calls one after another, each ending before the next starts. */
  | { readonly op: "call"; readonly ending: Ending; readonly times: number }
  /** A call that stays in flight until an `end` picks it. */
  | { readonly op: "start"; readonly ending: Ending }
  | { readonly op: "end"; readonly pick: number }
  | { readonly op: "advance"; readonly millis: number }
  | { readonly op: "isolate" }
  | { readonly op: "reset" }

interface Config {
  readonly policy: CircuitPolicy
  readonly openForMillis: number
  readonly trialCalls: number
  readonly successesToClose: number
  readonly countDefects: boolean
}

// ---------------------------------------------------------------------------------------------------------
// The reference model: the specification as a plain state machine, with the rate window kept as the list
// of counted calls (not buckets) and staleness as a set of live calls (not generations).
// ---------------------------------------------------------------------------------------------------------

type ModelState =
  | { readonly tag: "Closed" }
  | { readonly tag: "Open"; readonly until: number }
  | { readonly tag: "HalfOpen" }
  | { readonly tag: "Isolated" }

interface ModelCall {
  readonly trial: boolean
}

type Admission =
  | { readonly admitted: true; readonly call: ModelCall }
  | { readonly admitted: false; readonly state: "Open" | "HalfOpen" | "Isolated"; readonly retryAfterMillis: number }

const showModel = (state: ModelState) => (state.tag === "Open" ? `Open(${state.until})` : state.tag)

class Model {
  state: ModelState = { tag: "Closed" }
  readonly history: Array<string> = ["Closed"]
  /** Calls whose outcome still counts: admitted since the last transition or reset. */
  live = new Set<ModelCall>()
  failureRun = 0
  counted: Array<{ readonly at: number; readonly failed: boolean }> = []
  trials = 0
  trialSuccesses = 0

  readonly config: Config

  constructor(config: Config) {
    this.config = config
  }

  private moveTo(next: ModelState) {
    this.state = next
    this.history.push(showModel(next))
    this.forget()
  }

  private forget() {
    this.live = new Set()
    this.failureRun = 0
    this.counted = []
    this.trials = 0
    this.trialSuccesses = 0
  }

  /** What anyone looking at `now` sees: an open breaker whose time is up is half-open. */
  look(now: number) {
    if (this.state.tag === "Open" && now >= this.state.until) this.moveTo({ tag: "HalfOpen" })
    return this.state
  }

  inWindow(now: number) {
    if (this.config.policy.kind !== "rate") return []
    const bucketMillis = Duration.toMillis(this.config.policy.window) / 10
    return this.counted.filter((entry) => Math.floor(now / bucketMillis) - Math.floor(entry.at / bucketMillis) < 10)
  }

  admit(now: number): Admission {
    const state = this.look(now)
    switch (state.tag) {
      case "Isolated":
        return { admitted: false, state: "Isolated", retryAfterMillis: Infinity }
      case "Open":
        return { admitted: false, state: "Open", retryAfterMillis: state.until - now }
      case "HalfOpen": {
        if (this.trials === this.config.trialCalls) {
          return { admitted: false, state: "HalfOpen", retryAfterMillis: this.config.openForMillis }
        }
        this.trials++
        const call = { trial: true }
        this.live.add(call)
        return { admitted: true, call }
      }
      case "Closed": {
        const call = { trial: false }
        this.live.add(call)
        return { admitted: true, call }
      }
    }
  }

  end(call: ModelCall, ending: Ending, now: number) {
    if (!this.live.delete(call)) return
    const verdict = ending === "ok" || ending === "notFound"
      ? "success"
      : ending === "fail" || (ending === "die" && this.config.countDefects)
      ? "failure"
      : "neither"
    if (call.trial) {
      this.trials--
      if (verdict === "failure") this.moveTo({ tag: "Open", until: now + this.config.openForMillis })
      else if (verdict === "success" && ++this.trialSuccesses === this.config.successesToClose) {
        this.moveTo({ tag: "Closed" })
      }
      return
    }
    if (verdict === "neither") return
    const policy = this.config.policy
    let trips: boolean
    if (policy.kind === "consecutive") {
      this.failureRun = verdict === "failure" ? this.failureRun + 1 : 0
      trips = this.failureRun >= policy.failures
    } else {
      this.counted.push({ at: now, failed: verdict === "failure" })
      const window = this.inWindow(now)
      const failures = window.filter((entry) => entry.failed).length
      trips = window.length >= policy.minimumCalls && failures / window.length >= policy.failureRate
    }
    if (trips) this.moveTo({ tag: "Open", until: now + this.config.openForMillis })
  }

  isolate() {
    if (this.state.tag !== "Isolated") this.moveTo({ tag: "Isolated" })
  }

  reset() {
    if (this.state.tag === "Closed") this.forget()
    else this.moveTo({ tag: "Closed" })
  }
}

// ---------------------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------------------

const openForMillis = 100

const endingArbitrary: fc.Arbitrary<Ending> = fc.oneof(
  { weight: 4, arbitrary: fc.constant("ok" as const) },
  { weight: 5, arbitrary: fc.constant("fail" as const) },
  { weight: 3, arbitrary: fc.constantFrom("notFound" as const, "die" as const, "interrupt" as const) }
)

const operationArbitrary: fc.Arbitrary<Operation> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant("call" as const),
      ending: endingArbitrary,
      times: fc.integer({ min: 1, max: 3 })
    })
  },
  { weight: 5, arbitrary: fc.record({ op: fc.constant("start" as const), ending: endingArbitrary }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant("end" as const), pick: fc.nat({ max: 7 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("advance" as const),
      millis: fc.oneof(
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 30 }) },
        { weight: 2, arbitrary: fc.integer({ min: 60, max: 140 }) }
      )
    })
  },
  // Isolate stops a run's progress until a reset, so it is the rarest.
  {
    weight: 1,
    arbitrary: fc.constantFrom({ op: "reset" as const }, { op: "reset" as const }, { op: "isolate" as const })
  }
)

const operationsArbitrary = fc.array(operationArbitrary, { minLength: 1, maxLength: 40, size: "max" })

const consecutivePolicy: fc.Arbitrary<CircuitPolicy> = fc.record({
  kind: fc.constant("consecutive" as const),
  failures: fc.integer({ min: 1, max: 3 })
})

const ratePolicy: fc.Arbitrary<CircuitPolicy> = fc.record({
  kind: fc.constant("rate" as const),
  window: fc.constantFrom(Duration.millis(50), Duration.millis(120), Duration.millis(35)),
  minimumCalls: fc.integer({ min: 1, max: 4 }),
  failureRate: fc.constantFrom(0.25, 0.5, 0.6, 1)
})

const configArbitrary = (policy: fc.Arbitrary<CircuitPolicy>): fc.Arbitrary<Config> =>
  fc.record({
    policy,
    openForMillis: fc.constant(openForMillis),
    trialCalls: fc.integer({ min: 1, max: 3 }),
    successesToClose: fc.integer({ min: 1, max: 3 }),
    countDefects: fc.boolean()
  })

// ---------------------------------------------------------------------------------------------------------
// Running a sequence through the real breaker
// ---------------------------------------------------------------------------------------------------------

const show = (state: CircuitState) => (state._tag === "Open" ? `Open(${state.until})` : state._tag)

const stateCode = { Closed: 0, HalfOpen: 1, Open: 2, Isolated: 3 } as const

interface Request {
  readonly started: Deferred.Deferred<void>
  readonly gate: Deferred.Deferred<Ending>
  /** The breaker's transition count when the call reached the service. */
  startedInPeriod?: number
}

interface Running {
  readonly request: Request
  readonly fiber: Fiber.RuntimeFiber<string, Boom | NotFound | CircuitOpen>
  readonly ending: Ending
  readonly modelCall: ModelCall
}

/** Yields until `done()` holds (at most `limit` times), so a missing event fails an assertion, not the run. */
const yieldUntil = (done: () => boolean, limit = 200) =>
  Effect.gen(function*() {
    for (let i = 0; i < limit && !done(); i++) yield* Effect.yieldNow()
  })

let runCount = 0

const runOperations = (config: Config, operations: ReadonlyArray<Operation>) =>
  Effect.scoped(Effect.gen(function*() {
    const name = `prop-${++runCount}`
    const breaker: CircuitBreaker<Boom | NotFound> = yield* circuitBreaker<Boom | NotFound>({
      name,
      policy: config.policy,
      openFor: Duration.millis(config.openForMillis),
      trialCalls: config.trialCalls,
      successesToClose: config.successesToClose,
      countDefects: config.countDefects,
      isFailure: (error) => error._tag === "Boom"
    })
    const model = new Model(config)
    const seen: Array<string> = []
    yield* Effect.forkScoped(Stream.runForEach(breaker.changes, (state) => Effect.sync(() => seen.push(show(state)))))
    yield* yieldUntil(() => seen.length > 0)

    const running = new Set<Request>()
    const service = breaker((request: Request) =>
      Effect.gen(function*() {
        request.startedInPeriod = (yield* breaker.stats).transitions
        running.add(request)
        yield* Deferred.succeed(request.started, undefined)
        const ending = yield* Deferred.await(request.gate)
        if (ending === "ok") return "done"
        if (ending === "fail") return yield* new Boom()
        if (ending === "notFound") return yield* new NotFound()
        return yield* Effect.die("bug")
      }).pipe(Effect.ensuring(Effect.sync(() => running.delete(request))))
    )
    const pending: Array<Running> = []

    /** Starts a call; when the breaker lets it through, hands it back still waiting for its ending. */
    const startCall = (ending: Ending, now: number, where: string) =>
      Effect.gen(function*() {
        const request: Request = { started: yield* Deferred.make<void>(), gate: yield* Deferred.make<Ending>() }
        const fiber = yield* Effect.forkScoped(service(request))
        yield* Effect.raceFirst(Deferred.await(request.started), Effect.asVoid(Fiber.await(fiber)))
        const admitted = yield* Deferred.isDone(request.started)
        const expected = model.admit(now)
        expect(admitted, where).toBe(expected.admitted)
        if (expected.admitted) return { request, fiber, ending, modelCall: expected.call }
        const exit = yield* Fiber.await(fiber)
        const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
        expect(error, where).toEqual(
          new CircuitOpen({
            breaker: name,
            state: expected.state,
            retryAfter: Duration.millis(expected.retryAfterMillis)
          })
        )
        // An open breaker refuses only until openFor has passed since it opened.
        if (expected.state === "Open") expect(expected.retryAfterMillis, where).toBeGreaterThan(0)
        return undefined
      })

    const endCall = (call: Running, now: number) =>
      Effect.gen(function*() {
        if (call.ending === "interrupt") yield* Fiber.interrupt(call.fiber)
        else yield* Deferred.succeed(call.request.gate, call.ending).pipe(Effect.zipRight(Fiber.await(call.fiber)))
        model.end(call.modelCall, call.ending, now)
      })

    for (const [step, operation] of operations.entries()) {
      const where = `step ${step}: ${JSON.stringify(operation)}`
      const now = yield* TestClock.currentTimeMillis
      switch (operation.op) {
        case "call":
          for (let time = 0; time < operation.times; time++) {
            const call = yield* startCall(operation.ending, now, where)
            if (call !== undefined) yield* endCall(call, now)
          }
          break
        case "start": {
          const call = yield* startCall(operation.ending, now, where)
          if (call !== undefined) pending.push(call)
          break
        }
        case "end": {
          if (pending.length === 0) break
          const [call] = pending.splice(operation.pick % pending.length, 1)
          yield* endCall(call!, now)
          break
        }
        case "advance":
          yield* TestClock.adjust(Duration.millis(operation.millis))
          break
        case "isolate":
          yield* breaker.isolate
          model.isolate()
          break
        case "reset":
          yield* breaker.reset
          model.reset()
          break
      }

      const later = yield* TestClock.currentTimeMillis
      const stats = yield* breaker.stats
      expect(show(stats.state), where).toBe(showModel(model.look(later)))
      expect([stats.trialsInFlight, stats.trialSuccesses], where).toEqual([model.trials, model.trialSuccesses])
      expect(stats.consecutiveFailures, where).toBe(model.failureRun)
      const window = model.inWindow(later)
      expect([stats.windowCalls, stats.windowFailures], where).toEqual([
        window.length,
        window.filter((entry) => entry.failed).length
      ])
      // Never more than trialCalls trials at once: calls that reached the service since the breaker last
      // changed state, while it is half-open.
      if (stats.state._tag === "HalfOpen") {
        const trialsRunning = [...running].filter((request) => request.startedInPeriod === stats.transitions)
        expect(trialsRunning.length, where).toBeLessThanOrEqual(config.trialCalls)
      }
    }

    yield* yieldUntil(() => seen.length >= model.history.length)
    expect(seen).toEqual(model.history)
    const gauge = yield* Metric.value(circuitBreakerMetrics(name).state)
    expect(gauge.value).toBe(stateCode[model.state.tag])
  }))


describe("circuitBreaker properties", () => {
  it.effect.prop(
    "consecutive policy: every admission, refusal, state and stream event matches the reference model",
    { config: configArbitrary(consecutivePolicy), operations: operationsArbitrary },
    ({ config, operations }) => runOperations(config, operations),
    PropertyRuns.fastCheck(20261201)
  )

  it.effect.prop(
    "rate policy: every admission, refusal, state and stream event matches the reference model",
    { config: configArbitrary(ratePolicy), operations: operationsArbitrary },
    ({ config, operations }) => runOperations(config, operations),
    PropertyRuns.fastCheck(20261202)
  )
})

// ---------------------------------------------------------------------------------------------------------
// Interrupt at every step
// ---------------------------------------------------------------------------------------------------------

/** A service that takes a few steps of each kind and never answers, so every call ends interrupted. */
const slowService = (_: number) =>
  Effect.yieldNow().pipe(
    Effect.zipRight(Effect.sleep(Duration.millis(3))),
    Effect.zipRight(Effect.yieldNow()),
    Effect.zipRight(Effect.sleep(Duration.millis(3))),
    Effect.zipRight(Effect.never)
  )

/** The k-th step the test takes between interruptions: yields and Clock advances alternate. */
const step = (k: number) => (k % 2 === 0 ? Effect.yieldNow() : TestClock.adjust(Duration.millis(2)))

/** A half-open breaker with `trialCalls` free slots. */
const halfOpenBreaker = (trialCalls: number) =>
  Effect.gen(function*() {
    const breaker = yield* circuitBreaker({
      name: `interrupted-${++runCount}`,
      policy: { kind: "consecutive", failures: 1 },
      openFor: Duration.millis(openForMillis),
      trialCalls
    })
    yield* Effect.exit(breaker(() => Effect.fail("down"))(undefined))
    yield* TestClock.adjust(Duration.millis(openForMillis))
    expect((yield* breaker.state)._tag).toBe("HalfOpen")
    return breaker
  })

/** Exactly `trialCalls` fresh trials are admitted at once, and the next call is refused. */
const expectAllSlotsFree = (breaker: CircuitBreaker, trialCalls: number, where: string) =>
  Effect.gen(function*() {
    expect(yield* breaker.stats, where).toMatchObject({ trialsInFlight: 0, trialSuccesses: 0 })
    expect((yield* breaker.state)._tag, where).toBe("HalfOpen")
    const reached: Array<number> = []
    const probe = breaker((index: number) =>
      Effect.zipRight(Effect.sync(() => reached.push(index)), Effect.never)
    )
    const probes = yield* Effect.forEach(
      Array.from({ length: trialCalls + 1 }, (_, index) => index),
      (index) => Effect.forkScoped(probe(index))
    )
    yield* yieldUntil(() => reached.length >= trialCalls && probes[trialCalls]!.unsafePoll() !== null)
    expect(reached.length, where).toBe(trialCalls)
    const refused = probes[trialCalls]!.unsafePoll()
    expect(refused && Exit.isFailure(refused) && Cause.failureOption(refused.cause), where).toEqual(
      Option.some(
        new CircuitOpen({
          breaker: (yield* breaker.stats).name,
          state: "HalfOpen",
          retryAfter: Duration.millis(openForMillis)
        })
      )
    )
    yield* Effect.forEach(probes, Fiber.interrupt)
  })

describe("circuitBreaker, interrupt at every step", () => {
  it.scoped("a trial interrupted after any number of steps leaves its slot free", () =>
    Effect.gen(function*() {
      for (let k = 0; k <= 12; k++) {
        const breaker = yield* halfOpenBreaker(1)
        const trial = yield* Effect.forkScoped(breaker(slowService)(0))
        for (let taken = 0; taken < k; taken++) yield* step(taken)
        yield* Fiber.interrupt(trial)
        yield* expectAllSlotsFree(breaker, 1, `interrupted after ${k} steps`)
      }
    }))

  it.effect.prop(
    "any number of concurrent calls, each interrupted at its own step, leave every trial slot free",
    {
      trialCalls: fc.integer({ min: 1, max: 3 }),
      interruptAt: fc.array(fc.integer({ min: 0, max: 10 }), { minLength: 1, maxLength: 6 })
    },
    ({ interruptAt, trialCalls }) =>
      Effect.scoped(Effect.gen(function*() {
        const breaker = yield* halfOpenBreaker(trialCalls)
        const calls = yield* Effect.forEach(interruptAt, (_, index) =>
          Effect.forkScoped(breaker(slowService)(index)))
        const last = Math.max(...interruptAt)
        for (let taken = 0; taken <= last; taken++) {
          yield* Effect.forEach(calls.filter((_, index) => interruptAt[index] === taken), Fiber.interrupt)
          yield* step(taken)
        }
        yield* expectAllSlotsFree(breaker, trialCalls, JSON.stringify({ trialCalls, interruptAt }))
      })),
    PropertyRuns.fastCheck(20261203)
  )

  it.scoped("a closed breaker's calls interrupted at any step are never counted as failures", () =>
    Effect.gen(function*() {
      const breaker = yield* circuitBreaker({
        name: `interrupted-closed-${++runCount}`,
        policy: { kind: "consecutive", failures: 1 },
        openFor: "1 second"
      })
      for (let k = 0; k <= 12; k++) {
        const call = yield* Effect.forkScoped(breaker(slowService)(k))
        for (let taken = 0; taken < k; taken++) yield* step(taken)
        yield* Fiber.interrupt(call)
      }
      const stats = yield* breaker.stats
      expect(stats.consecutiveFailures).toBe(0)
      expect(stats.admitted).toBeGreaterThanOrEqual(12) // all but (at most) the call interrupted before it ran
      expect((yield* breaker.state)._tag).toBe("Closed")
    }))
})
