/**
 * loadShed over a limit (Tower's LoadShed over ConcurrencyLimit): a call that would wait fails at once,
 * a call that finds room goes through, and without loadShed the same limit waits. Shedding applies to the
 * first waiting limit below it and not to calls the service makes to other services.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Metric, TestClock } from "effect"
import { Middleware, Overloaded, RateLimited } from "keel"
import { isShedding } from "../../../src/internal/shedding.js"
import { atOnce, finished, settle } from "./timing.js"

const { concurrencyLimit, concurrencyLimitMetrics, loadShed, rateLimit, rateLimitMetrics, stack, timeout } = Middleware

const reachedLimit = new Overloaded({ reason: "concurrency limit reached" })

describe("loadShed", () => {
  it.scoped("over a full concurrency limit, fails at once with Overloaded; with a free permit, admits", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const service = stack(yield* loadShed(), yield* concurrencyLimit({ max: 1, name: "shed-cl" }))((id: string) =>
        Effect.as(Deferred.await(gate), id)
      )
      const holding = yield* Effect.fork(service("first"))
      yield* settle
      const refused = yield* atOnce(Effect.flip(service("second")))
      expect(refused).toEqual(reachedLimit)
      expect(refused.message).toBe("overloaded: concurrency limit reached")
      const metrics = concurrencyLimitMetrics("shed-cl")
      expect((yield* Metric.value(metrics.rejections("shed"))).count).toBe(1)
      expect((yield* Metric.value(metrics.waiting)).value).toBe(0)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* finished(holding)).toBe("first")
      expect(yield* atOnce(service("third"))).toBe("third")
    }))

  it.scoped("without loadShed the same limit makes the caller wait for the permit", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const service = stack(yield* concurrencyLimit({ max: 1 }))((id: string) => Effect.as(Deferred.await(gate), id))
      const holding = yield* Effect.fork(service("first"))
      yield* settle
      const waiting = yield* Effect.fork(service("second"))
      yield* settle
      expect(waiting.unsafePoll()).toBeNull()
      yield* Deferred.succeed(gate, undefined)
      expect(yield* finished(holding)).toBe("first")
      expect(yield* finished(waiting)).toBe("second")
    }))

  it.scoped("over a waiting rate limit, fails at once with RateLimited and the time to the next slot", () =>
    Effect.gen(function*() {
      const service = stack(yield* loadShed(), yield* rateLimit({ limit: 1, per: "10 millis", name: "shed-rl" }))(
        (n: number) => Effect.succeed(n)
      )
      expect(yield* atOnce(service(1))).toBe(1)
      yield* TestClock.adjust("4 millis")
      expect(yield* atOnce(Effect.flip(service(2)))).toEqual(new RateLimited({ retryAfter: Duration.millis(6) }))
      expect((yield* Metric.value(rateLimitMetrics("shed-rl").rejections("shed"))).count).toBe(1)
      expect((yield* Metric.value(rateLimitMetrics("shed-rl").waiting)).value).toBe(0)
      yield* TestClock.adjust("6 millis")
      expect(yield* atOnce(service(3))).toBe(3)
    }))

  it.scoped("applies to the first waiting limit below it, not to the service's own downstream calls", () =>
    Effect.gen(function*() {
      const downstreamGate = yield* Deferred.make<void>()
      const downstream = stack(yield* concurrencyLimit({ max: 1 }))((id: string) =>
        Effect.as(Deferred.await(downstreamGate), id)
      )
      const busy = yield* Effect.fork(downstream("busy"))
      yield* settle
      const seen: Array<boolean> = []
      const front = stack(yield* loadShed(), yield* concurrencyLimit({ max: 5 }))((id: string) =>
        Effect.zipRight(Effect.flatMap(isShedding, (shed) => Effect.sync(() => seen.push(shed))), downstream(id))
      )
      // The downstream limit is full, yet the call waits there: the front limit consumed the shedding.
      const call = yield* Effect.fork(front("through"))
      yield* settle
      expect(call.unsafePoll()).toBeNull()
      expect(seen).toEqual([false])
      yield* Deferred.succeed(downstreamGate, undefined)
      expect(yield* finished(busy)).toBe("busy")
      expect(yield* finished(call)).toBe("through")
    }))

  it.scoped("sheds at a limit below another middleware too (the request crosses the timeout's own fiber)", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const service = stack(yield* loadShed(), yield* timeout({ after: "1 minute" }), yield* concurrencyLimit({ max: 1 }))((id: string) =>
        Effect.as(Deferred.await(gate), id)
      )
      const holding = yield* Effect.fork(service("first"))
      yield* settle
      expect(yield* atOnce(Effect.flip(service("second")))).toEqual(reachedLimit)
      // Without loadShed the same composition waits.
      const waits = stack(yield* timeout({ after: "1 minute" }), yield* concurrencyLimit({ max: 1 }))((id: string) =>
        Effect.as(Deferred.await(gate), id)
      )
      const first = yield* Effect.fork(waits("first"))
      yield* settle
      const waiting = yield* Effect.fork(waits("second"))
      yield* settle
      expect(waiting.unsafePoll()).toBeNull()
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach([holding, first, waiting], finished)
      // The request was taken by the limit: after the call nothing is left pending.
      expect(yield* isShedding).toBe(false)
    }))

  it.scoped("a call that is already its result takes the request at the limit like any other", () =>
    Effect.gen(function*() {
      // Between loadShed and the limit, so the request travels in fiber context: what it sees after the call.
      const pendingAfter: Array<boolean> = []
      const observe: Middleware.Middleware = (service) => (request) =>
        Effect.tap(service(request), () => Effect.flatMap(isShedding, (pending) => Effect.sync(() => pendingAfter.push(pending))))
      const service = stack(yield* loadShed(), observe, yield* concurrencyLimit({ max: 1 }))((id: string) => Effect.succeed(id))
      expect(yield* atOnce(service("constant"))).toBe("constant")
      expect(pendingAfter).toEqual([false])
    }))

  it.scoped("passes through a rate limit that refuses anyway, to shed at the concurrency limit below", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const service = stack(
        yield* loadShed(),
        yield* rateLimit({ limit: 100, per: "1 second", onLimit: "reject" }),
        yield* concurrencyLimit({ max: 1 })
      )((id: string) => Effect.as(Deferred.await(gate), id))
      const holding = yield* Effect.fork(service("first"))
      yield* settle
      const refused: Exit.Exit<string, Overloaded | RateLimited> = yield* atOnce(Effect.exit(service("second")))
      expect(refused).toEqual(Exit.fail(reachedLimit))
      yield* Deferred.succeed(gate, undefined)
      yield* finished(holding)
    }))

  it.scoped("a waiting rate limit above consumes the shedding: the concurrency limit below it waits", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const service = stack(
        yield* loadShed(),
        yield* rateLimit({ limit: 100, per: "1 second" }),
        yield* concurrencyLimit({ max: 1 })
      )((id: string) => Effect.as(Deferred.await(gate), id))
      const holding = yield* Effect.fork(service("first"))
      yield* settle
      const waiting = yield* Effect.fork(service("second"))
      yield* settle
      expect(waiting.unsafePoll()).toBeNull()
      // To shed at both, put a loadShed above each.
      const both = stack(
        yield* loadShed(),
        yield* rateLimit({ limit: 100, per: "1 second" }),
        yield* loadShed(),
        yield* concurrencyLimit({ max: 1 })
      )((id: string) => Effect.as(Deferred.await(gate), id))
      const holdingBoth = yield* Effect.fork(both("first"))
      yield* settle
      expect(yield* atOnce(Effect.flip(both("second")))).toEqual(reachedLimit)
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach([holding, waiting, holdingBoth], finished)
    }))

  it.effect("Overloaded names the reason and, when known, when to retry", () =>
    Effect.sync(() => {
      expect(new Overloaded({ reason: "busy", retryAfter: Duration.seconds(2) }).message).toBe(
        "overloaded: busy (retry after 2s)"
      )
    }))
})
