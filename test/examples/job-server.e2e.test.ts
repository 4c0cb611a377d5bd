/**
 * The job server as its users meet it: a real process on a port it picked, real HTTP clients (fetch,
 * node:http with keep-alive, autocannon), real SIGTERM. Every load loop is bounded in count and time.
 */
import autocannon from "autocannon"
import * as Http from "node:http"
import type * as Net from "node:net"
import { createRequire } from "node:module"
import { afterEach, describe, expect, it } from "vitest"
import { killLeftovers, type RunningProcess, startTypeScript } from "../support/childProcess.js"

const parsePrometheus = createRequire(import.meta.url)("parse-prometheus-text-format") as (
  text: string
) => ReadonlyArray<{ name: string; type: string; metrics: ReadonlyArray<Record<string, unknown>> }>

const entry = "examples/job-server/main.ts"

afterEach(killLeftovers)

interface Server {
  readonly run: RunningProcess
  readonly base: string
  readonly port: number
}

const start = async (env: NodeJS.ProcessEnv = {}): Promise<Server> => {
  const run = startTypeScript(entry, [], { PORT: "0", LOG_LEVEL: "Debug", ...env })
  const [, port] = await run.waitForOutput(/listening on http:\/\/127\.0\.0\.1:(\d+)/, 30_000)
  return { run, base: `http://127.0.0.1:${port}`, port: Number(port) }
}

const submit = async (server: Server, body: unknown, headers: Record<string, string> = {}) => {
  const response = await fetch(`${server.base}/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body)
  })
  return { status: response.status, headers: response.headers, body: await response.json() as Record<string, unknown> }
}

interface NodeAnswer {
  readonly status: number
  readonly connection: string | undefined
  readonly socket: unknown
  readonly body: string
}

/** One request through node:http (an `agent` keeps its connection alive, `agent: false` opens one of its own). */
const nodeRequest = (options: Http.RequestOptions, body?: string, onSocket?: (socket: Net.Socket) => void) =>
  new Promise<NodeAnswer>((resolve, reject) => {
    const request = Http.request({ host: "127.0.0.1", ...options }, (response) => {
      let text = ""
      response.on("data", (chunk) => (text += chunk))
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          connection: response.headers.connection,
          socket: request.socket,
          body: text
        }))
      response.on("error", reject)
    })
    request.on("error", reject)
    if (onSocket !== undefined) request.once("socket", onSocket)
    request.setTimeout(10_000, () => request.destroy(new Error(`${options.path} timed out`)))
    request.end(body)
  })

/** A failed request, with when its connection was established (undefined: it never was). */
class RequestFailed extends Error {
  readonly code: string | undefined
  readonly connectedAt: number | undefined

  constructor(code: string | undefined, connectedAt: number | undefined) {
    super(`request failed: ${String(code)}`)
    this.code = code
    this.connectedAt = connectedAt
  }
}

/** POST /jobs on a connection of its own, closed after the answer. */
const postOnNewConnection = async (server: Server, body: unknown) => {
  let connectedAt: number | undefined
  const answer = await nodeRequest(
    { port: server.port, path: "/jobs", method: "POST", agent: false, headers: { "content-type": "application/json" } },
    JSON.stringify(body),
    (socket) => socket.once("connect", () => (connectedAt = Date.now()))
  ).catch((error: NodeJS.ErrnoException) => {
    throw new RequestFailed(error.code, connectedAt)
  })
  return { status: answer.status, body: JSON.parse(answer.body) as Record<string, unknown> }
}

const jobState = async (server: Server, id: string) =>
  await (await fetch(`${server.base}/jobs/${id}`)).json() as Record<string, unknown>

/** Polls a job until it is over (bounded). */
const settled = async (server: Server, id: string, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const job = await jobState(server, id)
    if (job["state"] === "completed" || job["state"] === "failed" || job["state"] === "unfinished") return job
    if (Date.now() > deadline) throw new Error(`job ${id} still ${String(job["state"])} after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const metrics = async (server: Server) => parsePrometheus(await (await fetch(`${server.base}/metrics`)).text())

const sample = (
  families: ReturnType<typeof parsePrometheus>,
  name: string,
  labels: Record<string, string> = {}
): number | undefined => {
  const family = families.find((candidate) => candidate.name === name)
  const series = family?.metrics.find((metric) => {
    const present = (metric["labels"] ?? {}) as Record<string, string>
    return Object.entries(labels).every(([key, value]) => present[key] === value)
  })
  return series === undefined ? undefined : Number(series["value"])
}

describe("job server", () => {
  it("runs every kind of job to its outcome, retrying flaky ones and recording attempts", async () => {
    const server = await start({ JOB_MAX_ATTEMPTS: "4", JOB_RETRY_BASE: "5 millis", JOB_RETRY_MAX: "20 millis", SEED: "7" })
    const sleep = await submit(server, { kind: "sleep", payload: { ms: 50 } })
    expect(sleep.status).toBe(202)
    expect(sleep.headers.get("location")).toBe(`/jobs/${String(sleep.body["id"])}`)
    const sometimes = await Promise.all(
      Array.from({ length: 6 }, () => submit(server, { kind: "flaky", payload: { failureRate: 0.5 } }))
    )
    const always = await submit(server, { kind: "flaky", payload: { failureRate: 1 } })
    const downstream = await submit(server, { kind: "downstream", payload: { calls: 2 } })
    const noop = await submit(server, { kind: "noop", payload: {} })

    expect(await settled(server, String(sleep.body["id"]))).toMatchObject({
      kind: "sleep",
      state: "completed",
      result: { sleptMs: 50 },
      attempts: 1
    })
    for (const flaky of sometimes) {
      const job = await settled(server, String(flaky.body["id"]))
      if (job["state"] === "completed") {
        expect(job["result"]).toEqual({ succeededOnAttempt: job["attempts"] })
      } else {
        expect(job).toMatchObject({ state: "failed", attempts: 4 })
      }
    }
    const attempts = await Promise.all(sometimes.map((flaky) => settled(server, String(flaky.body["id"]))))
    expect(attempts.some((job) => Number(job["attempts"]) > 1)).toBe(true) // at 50 % some job was retried
    expect(await settled(server, String(always.body["id"]))).toMatchObject({
      state: "failed",
      attempts: 4,
      error: "unavailable: flaky job failed on attempt 4"
    })
    expect(await settled(server, String(downstream.body["id"]))).toMatchObject({
      state: "completed",
      result: { calls: 2, answers: ["ok", "ok"] }
    })
    expect(await settled(server, String(noop.body["id"]))).toMatchObject({ state: "completed", result: null })
    expect((await fetch(`${server.base}/jobs/no-such-job`)).status).toBe(404)

    const families = await metrics(server)
    expect(sample(families, "keel_pool_jobs_completed_total", { pool: "jobs" })).toBeGreaterThanOrEqual(4)
    expect(sample(families, "keel_pool_jobs_failed_total", { pool: "jobs" })).toBeGreaterThanOrEqual(1)
    expect(sample(families, "keel_pool_jobs_retried_total", { pool: "jobs" })).toBeGreaterThanOrEqual(3)
  })

  it("an idempotency key returns the same job instead of a second one", async () => {
    const server = await start()
    const first = await submit(server, { kind: "sleep", payload: { ms: 10 }, idempotencyKey: "order-42" })
    const again = await submit(server, { kind: "sleep", payload: { ms: 10 }, idempotencyKey: "order-42" })
    expect(first.status).toBe(202)
    expect(again.status).toBe(200)
    expect(again.body["id"]).toBe(first.body["id"])
  })

  it("answers overload with 503 or 429 and Retry-After, never a hang or a 500", async () => {
    const server = await start({ WORKERS: "1", QUEUE_CAPACITY: "2", RATE_LIMIT: "20", RATE_LIMIT_PER: "1 minute" })
    const results = await Promise.all(
      Array.from({ length: 12 }, () =>
        submit(server, { kind: "sleep", payload: { ms: 5000 } }, { "x-client-id": "busy" }))
    )
    const statuses = results.map((result) => result.status).sort()
    expect(statuses.filter((status) => status === 202).length).toBeLessThanOrEqual(3) // 1 running + 2 queued
    const full = results.filter((result) => result.status === 503)
    expect(full.length).toBeGreaterThanOrEqual(9)
    for (const refused of full) {
      expect(refused.headers.get("retry-after")).toBe("1")
      expect(refused.body).toMatchObject({ error: "QueueFull" })
    }
    expect(statuses.every((status) => status === 202 || status === 503)).toBe(true)

    // The same client past its 20 requests a minute is told to slow down; another client is not.
    const limited = await Promise.all(
      Array.from({ length: 12 }, () => fetch(`${server.base}/healthz`, { headers: { "x-client-id": "busy" } }))
    )
    const tooMany = limited.filter((response) => response.status === 429)
    expect(tooMany.length).toBe(4) // 12 submissions + 8 health checks used the 20
    for (const response of tooMany) {
      expect(Number(response.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
      expect(await response.json()).toMatchObject({ error: "RateLimited" })
    }
    expect((await fetch(`${server.base}/healthz`, { headers: { "x-client-id": "calm" } })).status).toBe(200)
  })

  it("refuses bad input with the documented status and a JSON error body", async () => {
    const server = await start({ MAX_BODY_BYTES: "1024" })
    const post = (body: string | Uint8Array, headers: Record<string, string> = {}) =>
      fetch(`${server.base}/jobs`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body })
    const expectError = async (response: Response, status: number, error: string, message?: RegExp) => {
      expect(response.status).toBe(status)
      expect(response.headers.get("content-type")).toContain("application/json")
      const body = await response.json() as { error: string; message: string }
      expect(body.error).toBe(error)
      if (message !== undefined) expect(body.message).toMatch(message)
    }
    await expectError(await post("{not json"), 400, "Invalid", /invalid JSON/)
    await expectError(await post(JSON.stringify({ kind: "sleep", payload: {} })), 400, "Invalid", /payload\.ms: is missing/)
    await expectError(await post(JSON.stringify({ kind: "teleport", payload: {} })), 400, "Invalid", /kind/)
    await expectError(
      await post(JSON.stringify({ kind: "sleep", payload: { ms: 1 }, extra: true })),
      400,
      "Invalid",
      /extra/
    )
    await expectError(await post(JSON.stringify({ kind: "noop", payload: {}, pad: "x".repeat(2000) })), 413, "TooLarge")
    // Without a Content-Length the limit is enforced while reading.
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let chunk = 0; chunk < 4; chunk++) controller.enqueue(new TextEncoder().encode(" ".repeat(512)))
        controller.close()
      }
    })
    await expectError(
      await fetch(`${server.base}/jobs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: chunked,
        duplex: "half"
      } as RequestInit),
      413,
      "TooLarge"
    )
    await expectError(await fetch(`${server.base}/nowhere`), 404, "NotFound")
    const wrongMethod = await fetch(`${server.base}/jobs`, { method: "DELETE" })
    expect(wrongMethod.headers.get("allow")).toBe("POST")
    await expectError(wrongMethod, 405, "MethodNotAllowed")
    // The server is unharmed.
    expect((await submit(server, { kind: "noop", payload: {} })).status).toBe(202)
  })

  it("serves Prometheus metrics a real parser accepts: pool, breaker, HTTP by route and status, latency", async () => {
    const server = await start()
    await settled(server, String((await submit(server, { kind: "noop", payload: {} })).body["id"]))
    await fetch(`${server.base}/nowhere`)
    const families = await metrics(server)
    const names = new Set(families.map((family) => family.name))
    for (
      const name of [
        "keel_pool_queue_depth",
        "keel_pool_in_flight",
        "keel_pool_jobs_completed_total",
        "keel_pool_jobs_failed_total",
        "keel_pool_jobs_retried_total",
        "keel_pool_jobs_dead_lettered_total",
        "keel_circuit_state",
        "keel_http_requests_total",
        "keel_http_request_duration_seconds"
      ]
    ) expect(names).toContain(name)
    expect(sample(families, "keel_http_requests_total", { route: "/jobs", method: "POST", status: "202" })).toBe(1)
    expect(sample(families, "keel_http_requests_total", { route: "unmatched", status: "404" })).toBe(1)
    const latency = families.find((family) => family.name === "keel_http_request_duration_seconds")
    expect(latency?.type).toBe("HISTOGRAM")
  })

  it("opens the breaker while the downstream fails, then half-opens and closes once it recovers", async () => {
    const server = await start({ BREAKER_OPEN_FOR: "1 second", DOWNSTREAM_LATENCY: "5 millis", JOB_MAX_ATTEMPTS: "1" })
    const configure = (patch: Record<string, number>) =>
      fetch(`${server.base}/admin/downstream`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(patch)
      })
    expect((await configure({ failureRate: 1 })).status).toBe(200)
    const breakerState = async () => sample(await metrics(server), "keel_circuit_state", { breaker: "downstream" })
    for (let job = 0; job < 10 && (await breakerState()) !== 2; job++) {
      await settled(server, String((await submit(server, { kind: "downstream", payload: { calls: 2 } })).body["id"]))
    }
    expect(await breakerState()).toBe(2) // open
    const failedWhileOpen = await settled(
      server,
      String((await submit(server, { kind: "downstream", payload: {} })).body["id"])
    )
    expect(String(failedWhileOpen["error"])).toMatch(/circuit/i)

    expect((await configure({ failureRate: 0 })).status).toBe(200)
    await new Promise((resolve) => setTimeout(resolve, 1200)) // past openFor
    const recovered = await settled(server, String((await submit(server, { kind: "downstream", payload: {} })).body["id"]))
    expect(recovered["state"]).toBe("completed")
    const families = await metrics(server)
    expect(sample(families, "keel_circuit_state", { breaker: "downstream" })).toBe(0) // closed
    const transitions = (from: string, to: string) =>
      sample(families, "keel_circuit_transitions_total", { breaker: "downstream", from, to })
    expect(transitions("Closed", "Open")).toBeGreaterThanOrEqual(1)
    expect(transitions("Open", "HalfOpen")).toBeGreaterThanOrEqual(1)
    expect(transitions("HalfOpen", "Closed")).toBeGreaterThanOrEqual(1)
  })

  it("during the pre-stop delay after SIGTERM: readiness 503 (with Connection: close), liveness 200, jobs still accepted and run", async () => {
    const server = await start({ PRE_STOP_DELAY: "3 seconds" })
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    const get = (path: string) => nodeRequest({ port: server.port, path, agent })
    const before = await get("/readyz")
    expect(before).toMatchObject({ status: 200, connection: "keep-alive" })
    server.run.signal("SIGTERM")
    await server.run.waitForOutput(/shutting down \(SIGTERM\): not ready/, 10_000)
    const during = await get("/readyz")
    expect(during.socket).toBe(before.socket) // the same kept-alive connection, answered
    expect(during).toMatchObject({ status: 503, connection: "close" })
    expect(JSON.parse(during.body)).toMatchObject({ ready: false, reason: "preStop" })
    agent.destroy()
    expect((await fetch(`${server.base}/livez`)).status).toBe(200)
    // Work keeps coming through the load balancer while it notices: it is accepted and run, not refused.
    const accepted = await submit(server, { kind: "sleep", payload: { ms: 300 } })
    expect(accepted.status).toBe(202)
    const id = String(accepted.body["id"])
    const stateOf = async () => ((await (await fetch(`${server.base}/jobs/${id}`)).json()) as { state: string }).state
    const deadline = Date.now() + 5_000
    while ((await stateOf()) !== "completed" && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
    expect(await stateOf()).toBe("completed")
    expect(server.run.output()).not.toMatch(/draining \(SIGTERM\)/)
    await server.run.waitForOutput(/draining \(SIGTERM\): intake closed/, 10_000)
    expect(await server.run.waitForExit(20_000)).toEqual({ code: 0, signal: null })
    expect(server.run.output()).toMatch(/shutdown clean: trigger SIGTERM.*phases: preStop (29\d\d|3\d\d\d) ms/)
  })

  it("SIGTERM under load: every request answered, no resets or timeouts, every accepted job accounted for", async () => {
    const server = await start({
      WORKERS: "4",
      QUEUE_CAPACITY: "1000",
      RATE_LIMIT: "100000000",
      DRAIN_TIMEOUT: "20 seconds",
      JOB_MAX_ATTEMPTS: "1"
    })
    const statuses = new Map<number, number>()
    const errors: Array<string> = []
    let sigtermAt = Number.POSITIVE_INFINITY
    const unexpected: Array<string> = []
    let resolveFinished: (result: autocannon.Result) => void = () => {}
    const finished = new Promise<autocannon.Result>((resolve) => (resolveFinished = resolve))
    const load = autocannon({
      url: `${server.base}/healthz`,
      connections: 10,
      duration: 15,
      timeout: 10,
      requests: [{ method: "GET", path: "/healthz" }, { method: "GET", path: "/readyz" }]
    }, (_error, result) => resolveFinished(result))
    load.on("response", (_client: unknown, statusCode: number) => {
      statuses.set(statusCode, (statuses.get(statusCode) ?? 0) + 1)
      if (statusCode !== 200 && !(statusCode === 503 && Date.now() >= sigtermAt)) {
        unexpected.push(`${statusCode} at ${Date.now() - sigtermAt} ms from SIGTERM`)
      }
    })
    load.on("reqError", (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message))

    // Submissions open a connection each (kept-alive traffic is autocannon's). One whose connection was
    // established before SIGTERM must be answered. One that arrives during the drain is refused a connection;
    // if its handshake completed in the very moment the listener closed, still in the kernel's accept queue,
    // the kernel resets it instead (closing a listening socket resets what it has not yet accepted) — also a
    // refusal, never an answer cut short, so it counts as refused only when it connected after SIGTERM.
    const accepted: Array<string> = []
    const refusedAfterSigterm: Array<number> = []
    let submitting = true
    const submitter = (async () => {
      for (let index = 0; submitting && index < 500; index++) {
        try {
          const result = await postOnNewConnection(server, { kind: "sleep", payload: { ms: 200 + (index % 7) * 100 } })
          if (result.status === 202) accepted.push(String(result.body["id"]))
          else if (Date.now() >= sigtermAt) refusedAfterSigterm.push(result.status)
          else unexpected.push(`submission answered ${result.status} before SIGTERM`)
        } catch (error) {
          const { code, connectedAt } = error as RequestFailed
          const refused = code === "ECONNREFUSED" && Date.now() >= sigtermAt
          const resetInAcceptQueue = code === "ECONNRESET" && connectedAt !== undefined && connectedAt >= sigtermAt
          if (!refused && !resetInAcceptQueue) {
            unexpected.push(
              `submission error ${String(code)} at ${Date.now() - sigtermAt} ms from SIGTERM ` +
                `(connected at ${connectedAt === undefined ? "never" : `${connectedAt - sigtermAt} ms`})`
            )
          }
          if (refused) return
        }
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })()

    await new Promise((resolve) => setTimeout(resolve, 2000))
    expect(accepted.length).toBeGreaterThan(10)
    sigtermAt = Date.now()
    server.run.signal("SIGTERM")
    const exit = await server.run.waitForExit(30_000)
    submitting = false
    load.stop()
    const result = await finished
    await submitter

    expect(exit).toEqual({ code: 0, signal: null })
    expect(unexpected).toEqual([])
    expect(errors.filter((code) => code !== "ECONNREFUSED")).toEqual([])
    expect(result.timeouts).toBe(0)
    expect(statuses.get(200) ?? 0).toBeGreaterThan(100)
    expect(refusedAfterSigterm.every((status) => status === 503)).toBe(true)

    // Every accepted job has exactly one outcome: logged as completed or failed, or listed unfinished.
    const output = server.run.output()
    for (const id of accepted) {
      const outcomes = output.match(new RegExp(`job ${id} (completed|failed|unfinished)`, "g")) ?? []
      const listed = output.includes(`${id} (`) && /unfinished/.test(output)
      expect({ id, outcomes: outcomes.length + (outcomes.length === 0 && listed ? 1 : 0) }).toEqual({ id, outcomes: 1 })
    }
    expect(output).toMatch(/shutdown clean: trigger SIGTERM/)
  }, 90_000)
})
