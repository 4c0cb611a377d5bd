/**
 * The middleware core: composition order (outermost first, as ServiceBuilder), tap / filter,
 * timeout (interrupts the inner work, finalizers run first) and deadline propagation through nested calls.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, FiberRef, Option, Runtime, TestClock } from "effect"
import { Invalid, Middleware, Timeout } from "keel"

const { remaining, stack, within } = Middleware

const tracing = (name: string, trace: Array<string>): Middleware.Middleware => (service) => (request) =>
  Effect.sync(() => trace.push(`${name} in`)).pipe(
    Effect.zipRight(service(request)),
    Effect.ensuring(Effect.sync(() => trace.push(`${name} out`)))
  )

describe("stack", () => {
  it.effect("applies middleware outermost first, in the order written", () =>
    Effect.gen(function*() {
      const trace: Array<string> = []
      const service = stack(tracing("a", trace), tracing("b", trace), tracing("c", trace))((n: number) =>
        Effect.sync(() => (trace.push("service"), n * 2))
      )
      expect(yield* service(21)).toBe(42)
      expect(trace).toEqual(["a in", "b in", "c in", "service", "c out", "b out", "a out"])
    }))

  it.scoped("takes any number of layers; its type adds every layer's errors and accepts what every layer accepts", () =>
    Effect.gen(function*() {
      interface Call {
        readonly tenant: string
        readonly query: string
      }
      const trace: Array<string> = []
      const names = ["a", "b", "c", "d", "e", "f", "g", "h"]
      const perTenant = yield* Middleware.rateLimit({ limit: 100, per: "1 second", key: (call: Call) => call.tenant })
      const breaker = yield* Middleware.circuitBreaker<Invalid>({
        policy: { kind: "consecutive", failures: 3 },
        openFor: "1 second",
        isFailure: (error) => error._tag === "Invalid"
      })
      const stacked = stack(
        ...names.map((name) => tracing(name, trace)),
        yield* Middleware.timeout({ after: "1 second" }),
        perTenant,
        breaker
      )
      const search = (call: Call) =>
        call.query === "" ? Effect.fail(new Invalid({ reason: "empty query" })) : Effect.succeed([call.query])
      const guarded = stacked(search)
      expect(yield* guarded({ tenant: "acme", query: "gpu" })).toEqual(["gpu"])
      expect(trace.filter((entry) => entry.endsWith(" in"))).toEqual(names.map((name) => `${name} in`))
      // The errors of every layer and of the service, and nothing else.
      const failed = yield* Effect.flip(guarded({ tenant: "acme", query: "" }))
      const tag: "Invalid" | "Timeout" | "RateLimited" | "CircuitOpen" = failed._tag
      expect(tag).toBe("Invalid")
      // @ts-expect-error the keyed rate limit makes the whole stack need requests with a tenant
      stacked((query: string) => Effect.succeed(query))
      // @ts-expect-error the breaker inspects Invalid failures only, so the stack takes no service failing otherwise
      stacked((_: Call) => Effect.fail(new Timeout({ after: Duration.seconds(1) })))
    }))
})

describe("tap, filter", () => {
  it.scoped("tap observes requests, responses and failures without changing them", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const service = (yield* Middleware.tap<number, Invalid>({
        onRequest: (n) => Effect.sync(() => seen.push(`request ${n}`)),
        onSuccess: (n, out) => Effect.sync(() => seen.push(`ok ${n} → ${String(out)}`)),
        onFailure: (n, error) => Effect.sync(() => seen.push(`failed ${n}: ${error.reason}`))
      }))((n: number) => (n < 0 ? Effect.fail(new Invalid({ reason: "negative" })) : Effect.succeed(n + 1)))
      expect(yield* service(1)).toBe(2)
      expect(yield* Effect.flip(service(-1))).toEqual(new Invalid({ reason: "negative" }))
      expect(seen).toEqual(["request 1", "ok 1 → 2", "request -1", "failed -1: negative"])
    }))

  it.scoped("filter refuses bad requests with Invalid before the service runs", () =>
    Effect.gen(function*() {
      let calls = 0
      const service = (yield* Middleware.filter({
        check: (name: string) => (name.length === 0 ? "name must not be empty" : undefined)
      }))(
        (name: string) => Effect.sync(() => (calls++, `hello ${name}`))
      )
      expect(yield* service("ada")).toBe("hello ada")
      expect(yield* Effect.flip(service(""))).toEqual(new Invalid({ reason: "name must not be empty" }))
      expect(calls).toBe(1)
    }))
})

describe("timeout", () => {
  it.scoped("fails with Timeout { after } and interrupts the inner work, whose finalizers run first", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const slow = (_: void) =>
        Effect.sleep("5 seconds").pipe(Effect.onInterrupt(() => Effect.sync(() => events.push("inner cleaned up"))))
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const call = yield* Effect.fork(timeout(slow)(undefined))
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(call)
      expect(exit).toEqual(Exit.fail(new Timeout({ after: Duration.seconds(1) })))
      expect(events).toEqual(["inner cleaned up"])
    }))

  it.scoped("still fires when the caller runs uninterruptibly (as some servers run handlers)", () =>
    Effect.gen(function*() {
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const call = yield* Effect.fork(
        Effect.uninterruptible(timeout((_: void) => Effect.sleep("1 minute"))(undefined))
      )
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.await(call)).toEqual(Exit.fail(new Timeout({ after: Duration.seconds(1) })))
    }))

  it.scoped("interrupting the caller interrupts the call it is timing", () =>
    Effect.gen(function*() {
      let interrupted = false
      const timeout = yield* Middleware.timeout({ after: "1 minute" })
      const call = yield* Effect.fork(
        timeout((_: void) => Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))))(
          undefined
        )
      )
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(call)
      expect(interrupted).toBe(true)
    }))

  it.scoped("a call that ends at once is answered without suspending the caller, failures included", () =>
    Effect.gen(function*() {
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const service = timeout((n: number) => n > 0 ? Effect.succeed(n) : Effect.fail("negative"))
      // A fiber that has ended when runFork returns never suspended.
      expect(Runtime.runFork(Runtime.defaultRuntime)(service(3)).unsafePoll()).toEqual(Exit.succeed(3))
      expect(Runtime.runFork(Runtime.defaultRuntime)(service(-1)).unsafePoll()).toEqual(Exit.fail("negative"))
    }))

  it.scoped("a service that throws while making its call gives a defect, not a throw out of the timed service", () =>
    Effect.gen(function*() {
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const service = timeout((_: void): Effect.Effect<never> => {
        throw new Error("thrown while building the call")
      })
      const exit = yield* Effect.exit(service(undefined))
      expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit)).toBe(true)
      expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain("thrown while building the call")
    }))

  it.scoped("the call runs in a fiber of its own: FiberRef changes it makes stay there", () =>
    Effect.gen(function*() {
      const ref = FiberRef.unsafeMake("caller")
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const service = timeout((_: void) => Effect.zipRight(FiberRef.set(ref, "call"), FiberRef.get(ref)))
      expect(yield* service(undefined)).toBe("call")
      expect(yield* FiberRef.get(ref)).toBe("caller")
    }))

  it.scoped("lets a fast call through untouched", () =>
    Effect.gen(function*() {
      const timeout = yield* Middleware.timeout({ after: "1 second" })
      const call = yield* Effect.fork(timeout((n: number) => Effect.as(Effect.sleep("10 millis"), n))(7))
      yield* TestClock.adjust("10 millis")
      expect(yield* Fiber.join(call)).toBe(7)
    }))
})

describe("deadline", () => {
  it.effect("narrows the remaining budget for the call below, never widens it", () =>
    Effect.gen(function*() {
      expect(yield* remaining).toEqual(Option.none())
      const seen = yield* within("10 seconds")(within("3 seconds")(within("20 seconds")(remaining)))
      expect(seen).toEqual(Option.some(Duration.seconds(3)))
    }))

  it.scoped("a timeout below a sooner deadline fires at the deadline", () =>
    Effect.gen(function*() {
      const inner = (yield* Middleware.timeout({ after: "10 seconds" }))((_: void) => Effect.sleep("1 minute"))
      const deadline = yield* Middleware.deadline({ after: "2 seconds" })
      const call = yield* Effect.fork(deadline(inner)(undefined))
      yield* TestClock.adjust("2 seconds")
      const exit = yield* Fiber.await(call)
      expect(Exit.isFailure(exit)).toBe(true)
      expect(yield* Effect.flip(Fiber.join(call))).toBeInstanceOf(Timeout)
    }))

  it.scoped("nested calls see what is left of their caller's budget", () =>
    Effect.gen(function*() {
      const budgets: Array<number> = []
      const downstream = (_: void) =>
        Effect.map(remaining, (left) => budgets.push(Duration.toMillis(Option.getOrThrow(left))))
      const inner = yield* Middleware.deadline({ after: "5 seconds" })
      const outer = yield* Middleware.deadline({ after: "2 seconds" })
      const upstream = (_: void) => Effect.zipRight(Effect.sleep("1500 millis"), inner(downstream)(undefined))
      const call = yield* Effect.fork(outer(upstream)(undefined))
      yield* TestClock.adjust("1500 millis")
      yield* Fiber.join(call)
      expect(budgets).toEqual([500])
    }))
})
