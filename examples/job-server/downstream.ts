/**
 * A simulated dependency, and the client that calls it the way a production service should.
 *
 * The dependency answers after `latency` and fails with probability `failureRate`; both can be changed
 * while the server runs (`PUT /admin/downstream`), so the breaker can be watched opening when the
 * dependency fails and closing when it recovers. The client is a Keel middleware stack: `retry` (full
 * jitter, under a retry budget so retries cannot multiply an outage) outside `circuitBreaker` (fails fast
 * while the dependency is down) outside a per-attempt `timeout`.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import { Middleware, Unavailable } from "keel"
import type { CircuitOpen, Timeout } from "keel"
import type { Settings } from "./config.js"

export interface DownstreamSettings {
  readonly failureRate: number
  readonly latencyMs: number
}

export interface DownstreamService {
  readonly settings: Effect.Effect<DownstreamSettings>
  readonly configure: (
    patch: { readonly [Setting in keyof DownstreamSettings]?: DownstreamSettings[Setting] | undefined }
  ) => Effect.Effect<DownstreamSettings>
  /** One call through the client stack. */
  readonly call: Effect.Effect<string, Unavailable | CircuitOpen | Timeout>
  readonly breaker: Middleware.CircuitBreaker
}

export class Downstream extends Context.Tag("job-server/Downstream")<Downstream, DownstreamService>() {}

export const breakerName = "downstream"

export const layer = (settings: Settings) =>
  Layer.scoped(
    Downstream,
    Effect.gen(function*() {
      const current = yield* Ref.make<DownstreamSettings>({
        failureRate: settings.downstreamFailureRate,
        latencyMs: Duration.toMillis(settings.downstreamLatency)
      })
      const dependency = Effect.gen(function*() {
        const { failureRate, latencyMs } = yield* Ref.get(current)
        yield* Effect.sleep(Duration.millis(latencyMs))
        if ((yield* Random.next) < failureRate) {
          return yield* new Unavailable({ reason: "the downstream dependency failed" })
        }
        return "ok"
      })
      const breaker = yield* Middleware.circuitBreaker({
        name: breakerName,
        policy: { kind: "consecutive", failures: 5 },
        openFor: settings.breakerOpenFor
      })
      const retry = yield* Middleware.retry({
        name: breakerName,
        backoff: { base: "50 millis", max: "1 second", jitter: "full", maxAttempts: 3 }
      })
      const timeout = yield* Middleware.timeout({ after: settings.downstreamTimeout })
      const client = Middleware.stack(retry, breaker, timeout)((_: void) => dependency)
      return {
        settings: Ref.get(current),
        configure: (patch) =>
          Ref.updateAndGet(current, (settings) => ({
            failureRate: patch.failureRate ?? settings.failureRate,
            latencyMs: patch.latencyMs ?? settings.latencyMs
          })),
        call: client(undefined),
        breaker
      } satisfies DownstreamService
    })
  )
