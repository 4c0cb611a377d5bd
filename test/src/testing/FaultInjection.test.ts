/**
 * FaultInjection, as a user relies on it: a seed replays the same faults call for call; over many calls
 * each fault fires at its rate; failures are fresh instances of the service's own errors; a hang ends only
 * when a `timeout` ends it and a delay only when the clock has moved on; `wrap` and `layer` put faults into
 * a service object's Effects and nowhere else; the counters agree with what the calls saw; and a spec that
 * cannot work is a defect that says why.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Clock,
  Context,
  Data,
  Duration,
  Effect,
  Exit,
  FastCheck as fc,
  Fiber,
  Layer,
  Option,
  Random,
  Ref,
  TestClock
} from "effect"
import { Middleware, Timeout } from "keel"
import * as FaultInjection from "../../../src/testing/FaultInjection.js"
import { InjectedDefect, Latency } from "../../../src/testing/FaultInjection.js"
import { atOnce, exitNow, settle } from "../middleware/timing.js"

class UserNotFound extends Data.TaggedError("UserNotFound")<{ readonly id: string }> {}
class StoreUnavailable extends Data.TaggedError("StoreUnavailable")<{}> {}

class Greeting extends Context.Tag("FaultInjectionTest/Greeting")<Greeting, string>() {}

const userErrors = [() => new UserNotFound({ id: "injected" }), () => new StoreUnavailable()]

/** Runs `effect` with a fixed seed, so a statistical test draws the same numbers on every run. */
const seeded = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.withRandom(effect, Random.make(20_261_122))

/** A service answering with the virtual instant it ran at, so a caller can tell how long it was held back. */
const ranAt = (_request: string) => Clock.currentTimeMillis

/** A service answering its request, counting the calls that reached it. */
const countingEcho = () => {
  const reached = { count: 0 }
  const service = (request: string) => Effect.sync(() => (reached.count++, request))
  return { service, reached }
}

/** What a call ended as: `ok`, `ok after <ms>`, the failure's tag, `defect` or `hang`. */
const describeEnd = (calledAt: number, exit: Exit.Exit<number, { readonly _tag: string }> | null): string => {
  if (exit === null) return "hang"
  if (Exit.isSuccess(exit)) return exit.value === calledAt ? "ok" : `ok after ${exit.value - calledAt} ms`
  const defect = Cause.dieOption(exit.cause)
  if (Option.isSome(defect)) return defect.value instanceof InjectedDefect ? "defect" : "unexpected defect"
  return Option.match(Cause.failureOption(exit.cause), { onNone: () => "interrupted", onSome: (error) => error._tag })
}

/**
 * Makes `count` calls one after another; a call still running once it has settled gets the clock moved on
 * by `longestDelay`, and one still running after that is a hang (and is interrupted).
 */
const outcomesOf = (
  call: Effect.Effect<number, { readonly _tag: string }>,
  count: number,
  longestDelay: Duration.DurationInput
) =>
  Effect.forEach(Array.from({ length: count }), () =>
    Effect.gen(function*() {
      const calledAt = yield* Clock.currentTimeMillis
      const fiber = yield* Effect.fork(call)
      yield* settle
      if (fiber.unsafePoll() === null) yield* Effect.zipRight(TestClock.adjust(longestDelay), settle)
      const exit = fiber.unsafePoll()
      if (exit === null) yield* Fiber.interrupt(fiber)
      return describeEnd(calledAt, exit)
    }))

/**
 * Starts `count` calls at the same instant, moves the clock on by `longestDelay`, and counts how they
 * ended. Calls still running then are hangs, and are interrupted. TestClock wakes sleepers one at a time,
 * each for a few real timer ticks, so tests keep the delayed calls to a few hundred.
 */
const tallyOf = (
  call: Effect.Effect<number, { readonly _tag: string }>,
  count: number,
  longestDelay: Duration.DurationInput
) =>
  Effect.gen(function*() {
    const calledAt = yield* Clock.currentTimeMillis
    const fibers = yield* Effect.forEach(Array.from({ length: count }), () => Effect.fork(call))
    yield* TestClock.adjust(longestDelay)
    yield* settle
    const tally = { passed: 0, delayed: 0, failures: 0, defects: 0, hangs: 0 }
    for (const fiber of fibers) {
      const end = describeEnd(calledAt, fiber.unsafePoll())
      if (end === "ok") tally.passed++
      else if (end.startsWith("ok after")) tally.delayed++
      else if (end === "defect") tally.defects++
      else if (end === "hang") tally.hangs++
      else if (end === "UserNotFound" || end === "StoreUnavailable") tally.failures++
      else expect.fail(`unexpected end: ${end}`)
    }
    yield* Fiber.interruptAll(fibers)
    return tally
  })

/** The delays `count` calls starting together were held back by, on a service that always gets through. */
const delaysOf = (latency: Latency, count: number, longest: Duration.DurationInput) =>
  Effect.gen(function*() {
    const injector = yield* FaultInjection.make({ latency: { rate: 1, distribution: latency } })
    const calledAt = yield* Clock.currentTimeMillis
    const call = injector(ranAt)("request")
    const fibers = yield* Effect.forEach(Array.from({ length: count }), () => Effect.fork(call))
    yield* TestClock.adjust(longest)
    return yield* Effect.forEach(fibers, (fiber) => Effect.map(Effect.flatten(exitNow(fiber)), (at) => at - calledAt))
  })

/** `observed` is within five standard deviations of the binomial expectation for `trials` at `probability`. */
const expectNear = (observed: number, trials: number, probability: number, what: string) => {
  const expected = trials * probability
  const tolerance = 5 * Math.sqrt(trials * probability * (1 - probability))
  expect(Math.abs(observed - expected), `${what}: ${observed}, expected about ${expected}`).toBeLessThanOrEqual(
    tolerance
  )
}

const mean = (values: ReadonlyArray<number>) => values.reduce((sum, value) => sum + value, 0) / values.length

describe("FaultInjection: a seed replays the faults", () => {
  const everyFault: FaultInjection.Faults<UserNotFound | StoreUnavailable> = {
    hang: { rate: 0.05 },
    defect: { rate: 0.1 },
    failure: { rate: 0.2, errors: userErrors },
    latency: { rate: 0.3, distribution: Latency.uniform("10 millis", "100 millis") }
  }

  it.effect.prop(
    "the same seed gives the same 200 outcomes, delays included; another seed gives others",
    { seed: fc.integer() },
    ({ seed }) =>
      Effect.gen(function*() {
        const injector = yield* FaultInjection.make(everyFault)
        const call = injector(ranAt)("request")
        const outcomesFor = (runSeed: number) =>
          Effect.withRandom(outcomesOf(call, 200, "100 millis"), Random.make(runSeed))

        const first = yield* outcomesFor(seed)
        expect(yield* outcomesFor(seed)).toEqual(first)
        expect(yield* outcomesFor(seed + 1)).not.toEqual(first)

        const kinds = new Set(first.map((outcome) => outcome.startsWith("ok after") ? "delayed" : outcome))
        expect([...kinds].sort()).toEqual(["StoreUnavailable", "UserNotFound", "defect", "delayed", "hang", "ok"])
      }),
    // Each case replays 600 calls with delays on the TestClock; three seeds make the point at a bounded cost.
    { fastCheck: { numRuns: 3, seed: 20_261_122 } }
  )
})

describe("FaultInjection: rates", () => {
  it.effect("over 10,000 calls each fault fires at its rate, among the calls that got that far", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({
        hang: { rate: 0.1 },
        defect: { rate: 0.2 },
        failure: { rate: 0.3, errors: userErrors },
        latency: { rate: 0.05, distribution: Latency.fixed("50 millis") }
      })
      const calls = 10_000
      const tally = yield* seeded(tallyOf(injector(ranAt)("request"), calls, "50 millis"))
      expectNear(tally.hangs, calls, 0.1, "hangs")
      expectNear(tally.defects, calls, 0.9 * 0.2, "defects")
      expectNear(tally.failures, calls, 0.9 * 0.8 * 0.3, "failures")
      expectNear(tally.delayed, calls, 0.9 * 0.8 * 0.7 * 0.05, "delayed")
      expectNear(tally.passed, calls, 0.9 * 0.8 * 0.7 * 0.95, "passed untouched")
    }))

  it.effect("rates of 0 hand every call to the service unchanged and at once", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({
        hang: { rate: 0 },
        defect: { rate: 0 },
        failure: { rate: 0, errors: userErrors },
        latency: { rate: 0, distribution: Latency.fixed("1 hour") }
      })
      const { reached, service } = countingEcho()
      for (let call = 0; call < 100; call++) {
        expect(yield* atOnce(injector(service)(`request ${call}`))).toBe(`request ${call}`)
      }
      expect(reached.count).toBe(100)
    }))
})

describe("FaultInjection: the faults", () => {
  it.effect("failures are fresh instances from the given factories, picked evenly, and never reach the service", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({ failure: { rate: 1, errors: userErrors } })
      const { reached, service } = countingEcho()
      const errors = yield* seeded(Effect.forEach(Array.from({ length: 1000 }), () =>
        atOnce(Effect.flip(injector(service)("request")))))

      const tags = errors.map((error) => error._tag)
      expect(new Set(tags)).toEqual(new Set(["UserNotFound", "StoreUnavailable"]))
      expectNear(tags.filter((tag) => tag === "UserNotFound").length, 1000, 0.5, "UserNotFound")
      expect(errors.filter((error) => error._tag === "UserNotFound").every((error) => error.id === "injected"))
        .toBe(true)
      expect(new Set(errors).size).toBe(1000)
      expect(reached.count).toBe(0)
    }))

  it.effect("a defect kills the call with InjectedDefect and its message, `injected defect` by default", () =>
    Effect.gen(function*() {
      const { reached, service } = countingEcho()
      const named = yield* FaultInjection.make({ defect: { rate: 1, message: "disk on fire" } })
      const unnamed = yield* FaultInjection.make({ defect: { rate: 1 } })
      expect(yield* atOnce(Effect.exit(named(service)("request")))).toEqual(
        Exit.die(new InjectedDefect({ message: "disk on fire" }))
      )
      expect(yield* atOnce(Effect.exit(unnamed(service)("request")))).toEqual(
        Exit.die(new InjectedDefect({ message: "injected defect" }))
      )
      expect(reached.count).toBe(0)
    }))

  it.scoped("a hang is ended by Middleware.timeout at its deadline, and no sooner", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({ hang: { rate: 1 } })
      const { reached, service } = countingEcho()
      const guarded = Middleware.stack(yield* Middleware.timeout({ after: "1 second" }), injector)(service)
      const fiber = yield* Effect.fork(guarded("request"))
      yield* TestClock.adjust("999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      expect(yield* exitNow(fiber)).toEqual(Exit.fail(new Timeout({ after: Duration.seconds(1) })))
      expect(reached.count).toBe(0)
      expect((yield* injector.stats).hangs).toBe(1)
    }))

  it.effect("a delayed call reaches the service only once the clock has moved on by the delay", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({
        latency: { rate: 1, distribution: Latency.fixed("100 millis") }
      })
      const { reached, service } = countingEcho()
      const fiber = yield* Effect.fork(injector(service)("request"))
      yield* TestClock.adjust("99 millis")
      expect(fiber.unsafePoll()).toBeNull()
      expect(reached.count).toBe(0)
      yield* TestClock.adjust("1 millis")
      expect(yield* Effect.flatten(exitNow(fiber))).toBe("request")
      expect(reached.count).toBe(1)
    }))

  it.effect("delays are whole milliseconds: uniform within [min, max], exponential with its mean and cut at max", () =>
    seeded(
      Effect.gen(function*() {
        const uniform = yield* delaysOf(Latency.uniform("20 millis", "80 millis"), 200, "80 millis")
        expect(uniform.every(Number.isInteger)).toBe(true)
        expect(Math.min(...uniform)).toBeGreaterThanOrEqual(20)
        expect(Math.max(...uniform)).toBeLessThanOrEqual(80)
        expect(Math.abs(mean(uniform) - 50)).toBeLessThan(5)

        const exponential = yield* delaysOf(Latency.exponential("20 millis", { max: "60 millis" }), 200, "60 millis")
        expect(exponential.every(Number.isInteger)).toBe(true)
        expect(Math.min(...exponential)).toBeGreaterThanOrEqual(0)
        expect(Math.max(...exponential)).toBe(60)
        // The mean of min(X, max) for X exponential with mean m is m·(1 − e^(−max/m)).
        expect(Math.abs(mean(exponential) - 20 * (1 - Math.exp(-3)))).toBeLessThan(5)
      })
    ))
})

describe("FaultInjection: wrap and layer", () => {
  interface UserStore {
    readonly find: (id: string) => Effect.Effect<string, UserNotFound | StoreUnavailable>
    readonly size: Effect.Effect<number, StoreUnavailable>
    readonly cached: (id: string) => Option.Option<string>
    readonly version: Ref.Ref<number>
    readonly greetingTag: typeof Greeting
    readonly name: string
    readonly describe: () => string
  }

  const userStore = Effect.gen(function*() {
    const { reached, service } = countingEcho()
    const store: UserStore = {
      find: service,
      size: Effect.sync(() => ++reached.count),
      cached: (id) => Option.some(id),
      version: yield* Ref.make(1),
      greetingTag: Greeting,
      name: "users",
      describe: () => "the users store"
    }
    return { store, reached }
  })

  it.effect("wrap puts faults into the Effects of methods and of Effect members, and leaves the rest alone", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({ failure: { rate: 1, errors: [() => new StoreUnavailable()] } })
      const { reached, store } = yield* userStore
      for (const wrapped of [injector.wrap(store), injector.wrap(Object.freeze({ ...store }))]) {
        expect(yield* atOnce(Effect.exit(wrapped.find("ada")))).toEqual(Exit.fail(new StoreUnavailable()))
        expect(yield* atOnce(Effect.exit(wrapped.size))).toEqual(Exit.fail(new StoreUnavailable()))
        expect(wrapped.cached("ada")).toEqual(Option.some("ada"))
        expect(wrapped.version).toBe(store.version)
        expect(wrapped.greetingTag).toBe(Greeting)
        expect(wrapped.name).toBe("users")
        expect(wrapped.describe()).toBe("the users store")
        expect(Object.keys(wrapped)).toEqual(Object.keys(store))
        expect(wrapped.find).toBe(wrapped.find)
      }
      expect(reached.count).toBe(0)
      expect((yield* injector.stats).calls).toBe(4)
    }))

  it.effect("wrap keeps a class instance working: methods run on the original, private fields and getters too", () =>
    Effect.gen(function*() {
      class Counter {
        #count = 0
        increment() {
          return Effect.sync(() => ++this.#count)
        }
        get current() {
          return this.#count
        }
      }
      const counter = new Counter()
      const untouched = (yield* FaultInjection.make({})).wrap(counter)
      const failing = (yield* FaultInjection.make({ failure: { rate: 1, errors: [() => new StoreUnavailable()] } }))
        .wrap(counter)

      expect(untouched).toBeInstanceOf(Counter)
      expect(yield* atOnce(untouched.increment())).toBe(1)
      expect(untouched.current).toBe(1)
      expect(yield* atOnce(Effect.exit(failing.increment()))).toEqual(Exit.fail(new StoreUnavailable()))
      expect(counter.current).toBe(1)
    }))

  it.effect("layer(tag) wraps the service a layer builds, and passes the layer's other services through", () =>
    Effect.gen(function*() {
      class Users extends Context.Tag("FaultInjectionTest/Users")<Users, UserStore>() {}
      const { reached, store } = yield* userStore
      const live = Layer.merge(Layer.succeed(Users, store), Layer.succeed(Greeting, "hello"))
      const injector = yield* FaultInjection.make({ failure: { rate: 1, errors: [() => new StoreUnavailable()] } })
      const greetAda = Effect.gen(function*() {
        const user = yield* Effect.flatMap(Users, (users) => users.find("ada"))
        return `${yield* Greeting}, ${user}`
      })

      expect(yield* Effect.provide(greetAda, live)).toBe("hello, ada")
      expect(yield* Effect.exit(Effect.provide(greetAda, injector.layer(Users)(live)))).toEqual(
        Exit.fail(new StoreUnavailable())
      )
      expect(yield* Effect.provide(Greeting, injector.layer(Users)(live))).toBe("hello")
      expect(reached.count).toBe(1)
      expect((yield* injector.stats).failures).toBe(1)
    }))
})

describe("FaultInjection: stats and validation", () => {
  it.effect("stats start at zero and count exactly what the calls saw", () =>
    Effect.gen(function*() {
      const injector = yield* FaultInjection.make({
        hang: { rate: 0.1 },
        defect: { rate: 0.1 },
        failure: { rate: 0.2, errors: userErrors },
        latency: { rate: 0.3, distribution: Latency.fixed("10 millis") }
      })
      expect(yield* injector.stats).toEqual({ calls: 0, hangs: 0, defects: 0, failures: 0, delayed: 0 })
      const tally = yield* seeded(tallyOf(injector(ranAt)("request"), 500, "10 millis"))
      expect(yield* injector.stats).toEqual({
        calls: 500,
        hangs: tally.hangs,
        defects: tally.defects,
        failures: tally.failures,
        delayed: tally.delayed
      })
      expect(tally.hangs * tally.defects * tally.failures * tally.delayed * tally.passed).toBeGreaterThan(0)
    }))

  it.effect("a spec that cannot work is a defect naming what is wrong; rates of exactly 0 and 1 are fine", () =>
    Effect.gen(function*() {
      const invalid: ReadonlyArray<readonly [FaultInjection.Faults<StoreUnavailable>, string]> = [
        [{ hang: { rate: -0.1 } }, "hang.rate must be in [0, 1] (got -0.1)"],
        [{ defect: { rate: 1.5 } }, "defect.rate must be in [0, 1] (got 1.5)"],
        [{ failure: { rate: Number.NaN, errors: [() => new StoreUnavailable()] } }, "failure.rate must be in [0, 1] (got NaN)"],
        [{ latency: { rate: 2, distribution: Latency.fixed("1 second") } }, "latency.rate must be in [0, 1] (got 2)"],
        [{ failure: { rate: 0.5, errors: [] } }, "failure.errors must be a list of at least one error factory (got 0)"],
        [{ latency: { rate: 0.5, distribution: Latency.fixed(Duration.infinity) } }, "latency.distribution must be a finite fixed delay (got Infinity)"],
        [
          { latency: { rate: 0.5, distribution: Latency.uniform("2 seconds", "1 second") } },
          "latency.distribution must be a uniform delay with min ≤ max, both finite (got \"2s..1s\")"
        ],
        [
          { latency: { rate: 0.5, distribution: Latency.exponential("1 second", { max: Duration.infinity }) } },
          "latency.distribution must be an exponential delay with a finite mean and max (got \"mean 1s, max Infinity\")"
        ]
      ]
      for (const [faults, problem] of invalid) {
        const exit = yield* Effect.exit(FaultInjection.make(faults))
        const defect = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.dieOption(exit.cause)) : undefined
        expect(defect, problem).toBeInstanceOf(Cause.IllegalArgumentException)
        expect((defect as Error).message).toBe(`FaultInjection.make: ${problem}`)
      }
      const edges = yield* Effect.exit(FaultInjection.make({
        hang: { rate: 0 },
        defect: { rate: 1 },
        failure: { rate: 0, errors: [() => new StoreUnavailable()] },
        latency: { rate: 1, distribution: Latency.uniform("1 second", "1 second") }
      }))
      expect(Exit.isSuccess(edges)).toBe(true)
    }))
})
