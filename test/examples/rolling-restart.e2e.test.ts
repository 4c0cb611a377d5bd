/**
 * The rolling-restart drill, with real parts: HAProxy (Debian's `haproxy`, on the shipped
 * `examples/job-server/deploy/haproxy.cfg`, health checks on `/readyz`) in front of three job-server
 * processes sharing one `redis-server` queue, with the pre-stop delay and drain deadline of the shipped
 * Kubernetes manifest. Under continuous keep-alive load through HAProxy (`POST /jobs`, `GET /jobs/:id`),
 * each server in turn gets SIGTERM, must exit 0 with a clean report, and is replaced on its port; the next
 * waits until HAProxy has marked the replacement up. What it proves:
 * - with the pre-stop delay: no failed request at the client across the whole roll (no connection error,
 *   reset, time out or non-2xx answer), and every job that got a 202 runs and completes exactly once;
 * - with `PRE_STOP_DELAY=0`: what the delay buys — requests HAProxy still routes to a server that closed its
 *   intake are refused with 503 (counted and printed: a few per roll here, where the drain takes ~100 ms;
 *   as many as arrive while the drain lasts in general), while every accepted job still completes once.
 * Every request, wait and load loop is bounded; the counts are printed.
 */
import * as Http from "node:http"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { killLeftovers } from "../support/childProcess.js"
import { haproxyFile, readDeployment } from "../support/deployment.js"
import { type Haproxy, startHaproxy } from "../support/haproxy.js"
import {
  completionsIn,
  countBy,
  pause,
  shutdownReportOf,
  startJobServer,
  startsIn,
  waitFor
} from "../support/jobServer.js"
import { freePort, type RedisServer, startRedis } from "../support/redisServer.js"

afterEach(killLeftovers)

const backend = "job_servers"
const slots = ["job1", "job2", "job3"] as const

// --- load: clients that keep their connection to HAProxy alive and never stop while the roll runs

interface Answer {
  readonly status: number
  readonly body: string
}

const send = (agent: Http.Agent, port: number, method: string, path: string, body?: string) =>
  new Promise<Answer>((resolve, reject) => {
    const request = Http.request(
      { host: "127.0.0.1", port, method, path, agent, headers: body === undefined ? {} : { "content-type": "application/json" } },
      (response) => {
        let text = ""
        response.on("data", (chunk) => (text += chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }))
        response.on("error", reject)
      }
    )
    request.on("error", reject)
    request.setTimeout(10_000, () => request.destroy(new Error("timed out after 10 s")))
    request.end(body)
  })

interface Load {
  /** Requests sent and answered or failed. */
  requests: number
  /** Answers by status. */
  readonly statuses: Map<number, number>
  /** Requests that got no answer, and answers that were not 2xx: what the client saw, and when. */
  readonly failures: Array<{ readonly at: number; readonly what: string }>
  /** Ids of the jobs accepted (202). */
  readonly accepted: Array<string>
}

/**
 * `clients` loops, each on its own kept-alive connection: submit a short job, read it back twice, again —
 * until `stop` resolves or a loop has sent `maxRequests`.
 */
const runLoad = (port: number, clients: number, maxRequests: number, stopped: () => boolean) => {
  const load: Load = { requests: 0, statuses: new Map(), failures: [], accepted: [] }
  const record = (answer: Answer, what: string) => {
    load.requests++
    load.statuses.set(answer.status, (load.statuses.get(answer.status) ?? 0) + 1)
    if (answer.status < 200 || answer.status > 299) {
      load.failures.push({ at: Date.now(), what: `${what}: ${answer.status} ${answer.body.slice(0, 120)}` })
    }
    return answer
  }
  const fail = (error: Error, what: string) => {
    load.requests++
    load.failures.push({ at: Date.now(), what: `${what}: ${(error as NodeJS.ErrnoException).code ?? error.message}` })
    return undefined
  }
  const client = async (index: number) => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    let sent = 0
    let lastId: string | undefined
    try {
      while (!stopped() && sent < maxRequests) {
        const ms = 5 + ((index * 7 + sent) % 20)
        sent++
        const submitted = await send(agent, port, "POST", "/jobs", JSON.stringify({ kind: "sleep", payload: { ms } }))
          .then((answer) => record(answer, "POST /jobs"), (error: Error) => fail(error, "POST /jobs"))
        if (submitted?.status === 202) {
          lastId = String((JSON.parse(submitted.body) as { id: string }).id)
          load.accepted.push(lastId)
        }
        for (let read = 0; read < 2 && lastId !== undefined && !stopped(); read++) {
          sent++
          await send(agent, port, "GET", `/jobs/${lastId}`)
            .then((answer) => record(answer, "GET /jobs/:id"), (error: Error) => fail(error, "GET /jobs/:id"))
        }
      }
    } finally {
      agent.destroy()
    }
  }
  const done = Promise.all(Array.from({ length: clients }, (_, index) => client(index)))
  return { load, done }
}

// --- the drill

interface Roll {
  readonly requests: number
  readonly ok: number
  readonly failures: ReadonlyArray<string>
  readonly accepted: number
  readonly completed: number
  readonly startedMoreThanOnce: number
  readonly restarts: ReadonlyArray<string>
}

/**
 * Three servers behind HAProxy with `env`, restarted one after another under load; returns what the
 * clients saw and what became of their jobs. Each old process must exit 0 within pre-stop + drain + 5 s.
 */
const rollingRestart = async (redis: RedisServer, drill: string, preStopDelayMs: number, drainTimeoutMs: number): Promise<Roll> => {
  const ports = await Promise.all(slots.map(() => freePort()))
  const [lbPort, statsPort] = [await freePort(), await freePort()]
  const env = {
    JOB_QUEUE: "redis",
    REDIS_URL: redis.url,
    QUEUE_NAME: `rolling-${process.pid}-${drill}`,
    PRE_STOP_DELAY: `${preStopDelayMs} millis`,
    DRAIN_TIMEOUT: `${drainTimeoutMs} millis`,
    WORKERS: "4",
    // Every request reaches the servers from HAProxy's one address: the per-client rate limit is not the subject.
    RATE_LIMIT: "1000000"
  }
  const start = (slot: number) => startJobServer(slots[slot]!, { ...env, PORT: String(ports[slot]) })
  const servers = await Promise.all(slots.map((_, slot) => start(slot)))
  const everyProcess = [...servers]
  let haproxy: Haproxy | undefined
  try {
    haproxy = await startHaproxy(haproxyFile, {
      LB_BIND: `127.0.0.1:${lbPort}`,
      LB_STATS_BIND: `127.0.0.1:${statsPort}`,
      ...Object.fromEntries(ports.map((port, slot) => [`JOB_SERVER_${slot + 1}`, `127.0.0.1:${port}`]))
    }, `127.0.0.1:${statsPort}`)
    for (const slot of slots) await haproxy.waitForState(backend, slot, "UP", 15_000)

    let stopping = false
    const traffic = runLoad(lbPort, 4, 50_000, () => stopping)
    const restarts: Array<string> = []
    try {
      await pause(1_000)
      for (const [slot, name] of slots.entries()) {
        const old = servers[slot]!
        const signalled = Date.now()
        old.run.signal("SIGTERM")
        const markedDown = haproxy.waitForState(backend, name, "DOWN", preStopDelayMs + drainTimeoutMs + 5_000)
          .then(() => Date.now() - signalled)
        const exit = await old.run.waitForExit(preStopDelayMs + drainTimeoutMs + 5_000)
        const exitedAfter = Date.now() - signalled
        expect(exit, `${name}'s exit`).toEqual({ code: 0, signal: null })
        expect(shutdownReportOf(old.run.output()), `${name}'s report`).toMatch(/shutdown clean: trigger SIGTERM/)
        const replacement = await start(slot)
        servers[slot] = replacement
        everyProcess.push(replacement)
        await haproxy.waitForState(backend, name, "UP", 15_000)
        restarts.push(
          `${name}: marked down after ${await markedDown} ms, exited 0 after ${exitedAfter} ms, replacement up after ` +
            `${Date.now() - signalled} ms`
        )
      }
      await pause(1_000)
    } finally {
      stopping = true
      await traffic.done
    }
    const { load } = traffic

    // Every accepted job ran to completion: the processes' logs say so, and so does the store.
    const accepted = new Set(load.accepted)
    const completions = () => countBy(everyProcess.flatMap((server) => completionsIn(server.run.output()).map((c) => c.id)))
    await waitFor(() => {
      const completed = completions()
      return [...accepted].every((id) => completed.has(id)) ? true : undefined
    }, 30_000, "every accepted job completed", 1_000).catch(async (error: Error) => {
      const completed = completions()
      const missing = [...accepted].filter((id) => !completed.has(id))
      const records = await Promise.all(missing.slice(0, 5).map((id) =>
        fetch(`http://127.0.0.1:${lbPort}/jobs/${id}`).then((response) => response.text())
      ))
      const seenBy = missing.slice(0, 5).map((id) =>
        everyProcess.filter((server) => server.run.output().includes(id)).map((server) => server.label).join("+")
      )
      throw new Error(`${error.message}: ${missing.length} of ${accepted.size} not completed; e.g. ${records.join(" ")} logged by ${seenBy.join(", ")}`)
    })
    const starts = countBy(everyProcess.flatMap((server) => startsIn(server.run.output()).map((start) => start.id)))
    const sample = load.accepted.filter((_, index) => index % Math.max(1, Math.floor(load.accepted.length / 200)) === 0)
    for (const id of sample) {
      const record = await fetch(`http://127.0.0.1:${lbPort}/jobs/${id}`, { signal: AbortSignal.timeout(5_000) })
      expect(await record.json(), `job ${id} in the store`).toMatchObject({ id, state: "completed" })
    }
    const completed = completions()
    return {
      requests: load.requests,
      ok: [...load.statuses].filter(([status]) => status >= 200 && status <= 299).reduce((sum, [, count]) => sum + count, 0),
      failures: load.failures.map((failure) => failure.what),
      accepted: accepted.size,
      completed: [...accepted].filter((id) => completed.get(id) === 1).length,
      startedMoreThanOnce: [...accepted].filter((id) => (starts.get(id) ?? 0) > 1).length,
      restarts
    }
  } finally {
    await haproxy?.stop()
    for (const server of servers) server.run.signal("SIGKILL")
  }
}

const summary = (label: string, roll: Roll) => {
  const kinds = countBy(roll.failures.map((failure) => failure.replace(/ \{.*$/, "")))
  return [
    `${label}: ${roll.requests} requests, ${roll.ok} 2xx, ${roll.failures.length} failed` +
      (kinds.size === 0 ? "" : ` (${[...kinds].map(([what, count]) => `${count}× ${what}`).join("; ")})`),
    `  jobs: ${roll.accepted} accepted, ${roll.completed} completed exactly once, ${roll.startedMoreThanOnce} started more than once`,
    ...roll.restarts.map((restart) => `  ${restart}`)
  ].join("\n")
}

describe.sequential("rolling restart behind HAProxy", () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.stop()
  })

  it("with the manifest's pre-stop delay: no failed request and every accepted job completed exactly once", async () => {
    const { preStopDelayMs, drainTimeoutMs } = readDeployment()
    const roll = await rollingRestart(redis, "pre-stop", preStopDelayMs, drainTimeoutMs)
    console.log(summary(`rolling restart, PRE_STOP_DELAY ${preStopDelayMs} ms`, roll))
    expect(roll.requests).toBeGreaterThan(1_000)
    expect(roll.failures).toEqual([])
    expect(roll.ok).toBe(roll.requests)
    expect(roll.completed).toBe(roll.accepted)
    expect(roll.startedMoreThanOnce).toBe(0)
  }, 180_000)

  it("with PRE_STOP_DELAY=0: the requests routed to a draining server are refused; accepted jobs still complete once", async () => {
    const { drainTimeoutMs } = readDeployment()
    const roll = await rollingRestart(redis, "no-pre-stop", 0, drainTimeoutMs)
    console.log(summary("rolling restart, PRE_STOP_DELAY 0", roll))
    expect(roll.requests).toBeGreaterThan(1_000)
    // What fails is answered, not dropped: HAProxy retries refused connections elsewhere, so the client sees
    // the drain's typed refusals (503) of requests that reached a server after it closed its intake.
    for (const failure of roll.failures) expect(failure).toMatch(/^(POST \/jobs|GET \/jobs\/:id): 5\d\d /)
    expect(roll.completed).toBe(roll.accepted)
    expect(roll.startedMoreThanOnce).toBe(0)
  }, 180_000)
})
