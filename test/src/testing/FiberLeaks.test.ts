/**
 * FiberLeaks.check: a fiber that outlives the checked effect's scope is reported — however it was forked
 * (daemon, from inside another fiber, from a finalizer) — with its name, id and age on the TestClock, and
 * is interrupted afterwards; what the scope stops (`forkScoped`) or what ends within the grace yields is
 * not a leak. The effect's own failure comes before any leak.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Deferred, Duration, Effect, Exit, Fiber, Option, TestClock } from "effect"
import type { Scope } from "effect"
import * as FiberLeaks from "../../../src/testing/FiberLeaks.js"

class Boom extends Data.TaggedError("Boom")<{}> {}

/** The leak a check must have reported. */
const leakOf = <A, E>(exit: Exit.Exit<A, E | FiberLeaks.FiberLeak>) => {
  const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  expect(Option.isSome(failure) && failure.value instanceof FiberLeaks.FiberLeak, "a FiberLeak was expected")
    .toBe(true)
  return Option.getOrThrow(failure) as FiberLeaks.FiberLeak
}

const yieldTimes = (times: number) => Effect.repeatN(Effect.yieldNow(), times - 1)

/** Lets an interrupted fiber finish; fails the test if it has not ended by then. */
const expectEnded = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
  Effect.gen(function*() {
    yield* yieldTimes(10)
    const exit = fiber.unsafePoll()
    expect(exit !== null && Exit.isInterrupted(exit), "the leaked fiber should have been interrupted").toBe(true)
  })

describe("FiberLeaks.check", () => {
  it.effect("passes the effect's value through when every fiber it forked has ended", () =>
    Effect.gen(function*() {
      const value = yield* FiberLeaks.check(Effect.gen(function*() {
        const worker = yield* Effect.fork(Effect.succeed(20))
        yield* Effect.forkScoped(Effect.never)
        return (yield* Fiber.join(worker)) + 22
      }))
      expect(value).toBe(42)
    }))

  it.effect("a daemon fiber left running is reported by its fiber.name, id and age, then interrupted", () =>
    Effect.gen(function*() {
      let leaked: Fiber.RuntimeFiber<unknown, unknown> | undefined
      const exit = yield* Effect.exit(FiberLeaks.check(Effect.gen(function*() {
        yield* TestClock.adjust("1 second")
        leaked = yield* Effect.forkDaemon(Effect.never.pipe(Effect.annotateLogs("fiber.name", "lease-renewer")))
        yield* TestClock.adjust("5 seconds")
      })))
      const leak = leakOf(exit)
      const id = leaked!.id().id
      expect(leak.fibers).toEqual([{ id, name: "lease-renewer", age: Duration.seconds(5) }])
      expect(leak.message).toBe(`1 fiber still alive after the scope closed: lease-renewer (#${id}, alive 5s)`)
      yield* expectEnded(leaked!)
    }))

  it.effect("a leaked fiber without a name annotation is named by its span, else by its id", () =>
    Effect.gen(function*() {
      const fibers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
      const exit = yield* Effect.exit(FiberLeaks.check(Effect.gen(function*() {
        fibers.push(yield* Effect.forkDaemon(Effect.never.pipe(Effect.withSpan("poll-backend"))))
        fibers.push(yield* Effect.forkDaemon(Effect.never))
      })))
      const [spanned, anonymous] = fibers.map((fiber) => fiber.id().id)
      const leak = leakOf(exit)
      expect(leak.fibers.map((fiber) => fiber.name)).toEqual(["poll-backend", `#${anonymous}`])
      expect(leak.message).toBe(
        `2 fibers still alive after the scope closed: poll-backend (#${spanned}, alive 0ms), ` +
          `#${anonymous} (alive 0ms)`
      )
    }))

  it.effect("a fiber forked in the scope is stopped by it and is not a leak", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      yield* FiberLeaks.check(Effect.gen(function*() {
        yield* Effect.forkScoped(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
        yield* Deferred.await(started)
        yield* TestClock.adjust("1 minute")
      }))
      expect(yield* Deferred.isDone(started)).toBe(true)
    }))

  it.effect("a fiber that ends within the grace yields is not a leak; with no grace it is", () =>
    Effect.gen(function*() {
      const finishing = Effect.forkDaemon(yieldTimes(3))
      yield* FiberLeaks.check(finishing)
      const leak = leakOf(yield* Effect.exit(FiberLeaks.check(finishing, { graceYields: 0 })))
      expect(leak.fibers).toHaveLength(1)
    }))

  it.effect("fibers forked by a leaked fiber, or by a finalizer while the scope closes, are reported too", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(FiberLeaks.check(Effect.gen(function*() {
        yield* Effect.forkDaemon(
          Effect.zipRight(
            Effect.forkDaemon(Effect.never.pipe(Effect.annotateLogs("fiber.name", "grandchild"))),
            Effect.never
          ).pipe(Effect.annotateLogs("fiber.name", "child"))
        )
        yield* Effect.addFinalizer(() =>
          Effect.forkDaemon(Effect.never.pipe(Effect.annotateLogs("fiber.name", "hand-back")))
        )
      })))
      expect(leakOf(exit).fibers.map((fiber) => fiber.name).sort()).toEqual(["child", "grandchild", "hand-back"])
    }))

  it.effect("a finalizer's short cleanup fiber is not a leak", () =>
    Effect.gen(function*() {
      let cleanedUp = false
      yield* FiberLeaks.check(
        Effect.addFinalizer(() =>
          Effect.forkDaemon(Effect.zipRight(yieldTimes(2), Effect.sync(() => cleanedUp = true)))
        )
      )
      expect(cleanedUp).toBe(true)
    }))

  it.effect("the effect's own failure comes first, and what it leaked is still interrupted", () =>
    Effect.gen(function*() {
      let leaked: Fiber.RuntimeFiber<unknown, unknown> | undefined
      const failing: Effect.Effect<never, Boom, Scope.Scope> = Effect.gen(function*() {
        leaked = yield* Effect.forkDaemon(Effect.never)
        return yield* new Boom()
      })
      const exit = yield* Effect.exit(FiberLeaks.check(failing))
      expect(exit).toStrictEqual(Exit.fail(new Boom()))
      yield* expectEnded(leaked!)
    }))

  it.effect("the effect gets a fresh scope, closed when it ends", () =>
    Effect.gen(function*() {
      let closedInside = false
      yield* FiberLeaks.check(Effect.addFinalizer(() => Effect.sync(() => closedInside = true)))
      expect(closedInside).toBe(true)
    }))
})
