/**
 * The HTTP adapter on a real server (127.0.0.1, a port the OS picks) and a real client (fetch): each
 * Keel rejection becomes its status code, with Retry-After where the error knows the wait, and is counted.
 */
import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Data, Deferred, Duration, Effect, Fiber, Layer, Metric } from "effect"
import { createServer } from "node:http"
import { type HttpAnswer, HttpAnswerKey, Middleware, type Rejection, Timeout, Unavailable, withContext } from "keel"
import { rejections, withMiddleware } from "keel/http"

/** An application's own error, which is no rejection: left to the app's error handling (a 500). */
class DatabaseDown extends Data.TaggedError("DatabaseDown")<{ readonly table: string }> {}

/** An application's own rejection: it declares its answer, and withMiddleware gives it. */
class QuotaExceeded extends Data.TaggedError("QuotaExceeded")<{ readonly plan: string }> implements Rejection {
  override get message() {
    return `quota of plan ${this.plan} exceeded`
  }
  get [HttpAnswerKey](): HttpAnswer {
    return { status: 402, retryAfter: Duration.minutes(1) }
  }
}

/** Serves `app` for the rest of the scope and returns its base URL. */
const serve = <E>(app: HttpApp.Default<E, never>) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      HttpServer.serve(app).pipe(
        Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" }))
      )
    )
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return `http://127.0.0.1:${address.port}`
  })

const get = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(url, { signal: AbortSignal.timeout(10_000) })
    return { status: response.status, retryAfter: response.headers.get("retry-after"), body: await response.text() }
  })

const rejectionCount = (status: number, error: string) =>
  Effect.map(
    Metric.value(rejections.pipe(Metric.tagged("status", String(status)), Metric.tagged("error", error))),
    (state) => state.count
  )

const ok = HttpRouter.empty.pipe(HttpRouter.get("/", HttpServerResponse.text("ok")))

describe("withMiddleware", () => {
  it.scopedLive("Timeout → 504, and the request's work is interrupted", () =>
    Effect.gen(function*() {
      let interrupted = false
      const slow = HttpRouter.empty.pipe(HttpRouter.get(
        "/",
        Effect.as(Effect.sleep("5 seconds"), HttpServerResponse.text("late")).pipe(
          Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
        )
      ))
      const before = yield* rejectionCount(504, "Timeout")
      const url = yield* serve(withMiddleware(yield* Middleware.timeout({ after: "200 millis" }))(slow))
      const response = yield* get(url)
      expect(response.status).toBe(504)
      expect(JSON.parse(response.body)).toEqual({ error: "Timeout", message: "timed out after 200ms" })
      expect(interrupted).toBe(true)
      expect((yield* rejectionCount(504, "Timeout")) - before).toBe(1)
    }))

  it.scopedLive("RateLimited → 429 with Retry-After; other requests pass", () =>
    Effect.gen(function*() {
      const limit = yield* Middleware.rateLimit({ limit: 2, per: "30 seconds", onLimit: "reject" })
      const url = yield* serve(withMiddleware(limit)(ok))
      expect((yield* get(url)).status).toBe(200)
      expect((yield* get(url)).status).toBe(200)
      const refused = yield* get(url)
      expect(refused.status).toBe(429)
      expect(Number(refused.retryAfter)).toBeGreaterThanOrEqual(29)
      expect(Number(refused.retryAfter)).toBeLessThanOrEqual(30)
    }))

  it.scopedLive("Overloaded from loadShed over a concurrency limit → 503 with Retry-After", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
      const holding = HttpRouter.empty.pipe(
        HttpRouter.get("/", Effect.as(Deferred.await(gate), HttpServerResponse.text("done")))
      )
      const limit = yield* Middleware.concurrencyLimit({ max: 1 })
      const url = yield* serve(withMiddleware(Middleware.stack(yield* Middleware.loadShed(), limit))(holding))
      const first = yield* Effect.fork(get(url))
      yield* Effect.sleep("200 millis")
      const shed = yield* get(url)
      expect(shed.status).toBe(503)
      expect(shed.retryAfter).toBe("1")
      expect(JSON.parse(shed.body).error).toBe("Overloaded")
      yield* Deferred.succeed(gate, undefined)
      expect((yield* Fiber.join(first)).status).toBe(200)
    }))

  it.scopedLive("CircuitOpen → 503 with Retry-After once the breaker opens; Invalid → 400", () =>
    Effect.gen(function*() {
      const breaker = yield* Middleware.circuitBreaker({ policy: { kind: "consecutive", failures: 1 }, openFor: "20 seconds" })
      const failing = HttpRouter.empty.pipe(
        HttpRouter.get("/", Effect.fail(new DatabaseDown({ table: "jobs" })))
      )
      const url = yield* serve(withMiddleware(breaker)(failing))
      expect((yield* get(url)).status).toBe(500) // not a rejection: the app's own error handling
      const open = yield* get(url)
      expect(open.status).toBe(503)
      expect(JSON.parse(open.body).error).toBe("CircuitOpen")
      expect(Number(open.retryAfter)).toBeGreaterThanOrEqual(19)

      const named = HttpRouter.empty.pipe(HttpRouter.get("/", HttpServerResponse.text("hello")))
      const validating = yield* Middleware.filter({
        check: (request: { readonly url: string }) =>
          request.url.includes("name=") ? undefined : "the name query parameter is required"
      })
      const validatedUrl = yield* serve(withMiddleware(validating)(named))
      const invalid = yield* get(validatedUrl)
      expect(invalid.status).toBe(400)
      expect(JSON.parse(invalid.body).message).toBe("invalid: the name query parameter is required")
      expect((yield* get(`${validatedUrl}/?name=ada`)).status).toBe(200)
    }))

  it.scopedLive("every rejection is answered as it declares, under context too; a rejection of the app's own as well", () =>
    Effect.gen(function*() {
      const identity = yield* Middleware.tap({})
      const failingWith = (error: unknown) => withMiddleware(identity)(Effect.fail(error))
      const answers: Array<[unknown, number, string | null, string]> = [
        [new Unavailable({ reason: "database down" }), 503, null, "unavailable: database down"],
        [new Unavailable({ reason: "database down", retryAfter: Duration.millis(2_500) }), 503, "3", "unavailable: database down (retry after 2s 500ms)"],
        [new QuotaExceeded({ plan: "free" }), 402, "60", "quota of plan free exceeded"]
      ]
      for (const [error, status, retryAfter, message] of answers) {
        const response = yield* get(yield* serve(failingWith(error)))
        expect([response.status, response.retryAfter, JSON.parse(response.body).message]).toEqual([status, retryAfter, message])
      }
      // Context added on the way up changes neither the status nor the tag; the message carries the chain.
      const timedOutUnderContext = Effect.fail(new Timeout({ after: Duration.seconds(1) })).pipe(
        withContext("calling the inventory"),
        withContext("placing the order")
      )
      const response = yield* get(yield* serve(withMiddleware(identity)(timedOutUnderContext)))
      expect(response.status).toBe(504)
      expect(JSON.parse(response.body)).toEqual({
        error: "Timeout",
        message: "placing the order: calling the inventory: timed out after 1s"
      })
    }))

})
