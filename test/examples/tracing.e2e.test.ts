/**
 * One job's trace across two processes, as a trace viewer would show it: a job-server process that only takes
 * requests (WORKERS=0) and a second job-server process that only runs jobs, on one real redis-server, both
 * exporting with the real OpenTelemetry OTLP/HTTP exporter to a receiver in this test. A `POST /jobs` sent with
 * a W3C `traceparent` yields, under the caller's trace id: the request's server span (API process), the
 * queue's `send` span beneath it (same process), and the job's `process` span in the worker process, a child
 * of the `send` span and linked to it. The trace is printed. On SIGTERM each process exports its shutdown as a
 * trace of its own: a root `shutdown` span with a child per phase and per component that drained.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { killLeftovers } from "../support/childProcess.js"
import { type JobServer, startJobServer, waitFor } from "../support/jobServer.js"
import * as OtlpReceiver from "../support/otlpReceiver.js"
import { type RedisServer, startRedis } from "../support/redisServer.js"

afterEach(killLeftovers)

let redis: RedisServer
let receiverScope: Scope.CloseableScope
let receiver: OtlpReceiver.OtlpReceiver
beforeAll(async () => {
  redis = await startRedis()
  receiverScope = Effect.runSync(Scope.make())
  receiver = await Effect.runPromise(Scope.extend(OtlpReceiver.start(), receiverScope))
}, 30_000)
afterAll(async () => {
  await Effect.runPromise(Scope.close(receiverScope, Exit.void))
  await redis.stop()
})

const callerTraceId = "4bf92f3577b34da6a3ce929d0e0e4736"
const callerSpanId = "00f067aa0ba902b7"

describe("tracing across processes", () => {
  it.live("a POST /jobs and the job's run in another process share the caller's trace; the run links to the send", () =>
    Effect.gen(function*() {
      const shared = {
        JOB_QUEUE: "redis",
        REDIS_URL: redis.url,
        QUEUE_NAME: `trace-${process.pid}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        // Spans leave at once rather than every 5 s, so the test sees them while the processes run.
        OTEL_BSP_SCHEDULE_DELAY: "100"
      }
      const servers: Array<JobServer> = []
      const stopAll = Effect.promise(() =>
        Promise.all(servers.map(async (server) => {
          if (server.run.child.exitCode === null && server.run.child.signalCode === null) server.run.signal("SIGTERM")
          await server.run.waitForExit(15_000)
        }))
      )
      return yield* Effect.ensuring(
        Effect.gen(function*() {
          const api = yield* Effect.promise(() =>
            startJobServer("api", { ...shared, WORKERS: "0", OTEL_SERVICE_NAME: "jobs-api" })
          )
          servers.push(api)
          const worker = yield* Effect.promise(() =>
            startJobServer("worker", { ...shared, WORKERS: "1", OTEL_SERVICE_NAME: "jobs-worker" })
          )
          servers.push(worker)

          const response = yield* Effect.promise(() =>
            fetch(`${api.base}/jobs`, {
              method: "POST",
              headers: { "content-type": "application/json", traceparent: `00-${callerTraceId}-${callerSpanId}-01` },
              body: JSON.stringify({ kind: "sleep", payload: { ms: 50 } })
            })
          )
          expect(response.status).toBe(202)
          const { id } = (yield* Effect.promise(() => response.json())) as { id: string }
          yield* Effect.promise(() =>
            waitFor(async () => {
              const record = (await (await fetch(`${api.base}/jobs/${id}`)).json()) as { state: string }
              return record.state === "completed" ? record : undefined
            }, 10_000, `job ${id} completed`)
          )

          const spans = yield* receiver.waitFor(
            (received) => received.some((span) => span.service === "jobs-worker" && span.name === "process jobs"),
            "10 seconds"
          )
          const inTrace = spans.filter((span) => span.traceId === callerTraceId)
          const request = inTrace.find((span) => span.name === "POST /jobs")
          const send = inTrace.find((span) => span.name.startsWith("send "))
          const run = inTrace.find((span) => span.name === "process jobs")
          console.log(
            `one trace across two processes (trace ${callerTraceId}):\n` +
              inTrace
                .slice()
                .sort((a, b) => Number(a.startNs - b.startNs))
                .map((span) =>
                  `  ${span.service}: ${span.name} [${span.kind}] span ${span.spanId} parent ${span.parentSpanId ?? "-"}` +
                  `${span.links.length === 0 ? "" : ` links ${span.links.map((link) => link.spanId).join(",")}`}` +
                  ` ${(Number(span.endNs - span.startNs) / 1e6).toFixed(2)} ms`
                )
                .join("\n")
          )

          expect(request).toMatchObject({
            service: "jobs-api",
            kind: "server",
            parentSpanId: callerSpanId,
            attributes: expect.objectContaining({
              "http.request.method": "POST",
              "http.route": "/jobs",
              "http.response.status_code": 202
            })
          })
          expect(send).toMatchObject({ service: "jobs-api", kind: "producer", parentSpanId: request!.spanId })
          expect(run).toMatchObject({
            service: "jobs-worker",
            kind: "consumer",
            parentSpanId: send!.spanId,
            attributes: expect.objectContaining({ "messaging.message.id": id, "keel.job.outcome": "completed" })
          })
          expect(run!.links.map((link) => [link.traceId, link.spanId])).toEqual([[callerTraceId, send!.spanId]])
          expect(run!.startNs).toBeGreaterThanOrEqual(send!.startNs)

          // SIGTERM: each process's shutdown is a trace of its own, with its phases and what drained.
          yield* stopAll
          const afterShutdown = yield* receiver.waitFor(
            (received) =>
              ["jobs-api", "jobs-worker"].every((service) =>
                received.some((span) => span.service === service && span.name === "shutdown")
              ),
            "10 seconds"
          )
          const shutdownOf = (service: string) => {
            const root = afterShutdown.find((span) => span.service === service && span.name === "shutdown")!
            const children = afterShutdown.filter((span) => span.parentSpanId === root.spanId)
            return { root, children: children.map((span) => span.name).sort() }
          }
          const apiShutdown = shutdownOf("jobs-api")
          const workerShutdown = shutdownOf("jobs-worker")
          console.log(
            `shutdown traces: jobs-api ${apiShutdown.children.join(", ")}; jobs-worker ${workerShutdown.children.join(", ")}`
          )
          expect(apiShutdown.root.parentSpanId).toBeUndefined()
          expect(apiShutdown.root.attributes).toMatchObject({ "keel.shutdown.trigger": "SIGTERM", "keel.shutdown.outcome": "clean" })
          // The worker's pool reports its drain; an idle HTTP server has nothing to report.
          expect(apiShutdown.children).toEqual(["shutdown finalizers", "shutdown inFlight"])
          expect(workerShutdown.children).toEqual(["drain jobs", "shutdown finalizers", "shutdown inFlight"])
          for (const child of afterShutdown.filter((span) => span.parentSpanId === apiShutdown.root.spanId)) {
            expect(child.startNs).toBeGreaterThanOrEqual(apiShutdown.root.startNs)
            expect(child.endNs).toBeLessThanOrEqual(apiShutdown.root.endNs)
          }
        }),
        stopAll
      )
    }), 60_000)
})
