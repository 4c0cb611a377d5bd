/**
 * The job server on the shared Redis queue (`JOB_QUEUE=redis`) as operators meet it: real job-server
 * processes (PORT=0), a real redis-server, real signals. What it proves:
 * - kill -9: a process that dies holding jobs loses none of them; exactly the jobs it held (started, not
 *   completed) run a second time, once each, taken over by the survivors within the lease + 1 s — at least
 *   once, and no more than that;
 * - SIGTERM: the draining process finishes its short jobs before it exits, and releases the jobs its deadline
 *   cuts, which another process starts at once (not after the 10 s lease);
 * - lease renewal: a job running 3× its lease is run once, never by two workers at once;
 * - Redis restarted (AOF on) mid-run: every accepted job completes and the processes reconnect by themselves;
 *   a submission refused meanwhile is a 503, never a 500 or a hang;
 * - Redis unreachable (stopped, never there, or hung without closing anything): POST /jobs is a 503 with a JSON
 *   body in bounded time, /healthz and /readyz answer, and SIGTERM ends the process within its drain deadline
 *   + 3 s.
 * Every wait is bounded; the figures (takeover and shutdown times) are printed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { killLeftovers } from "../support/childProcess.js"
import {
  completionsIn,
  countBy,
  inFlightIn,
  type JobServer as Server,
  pause,
  shutdownReportOf,
  type Start,
  startJobServer,
  startsIn,
  waitFor
} from "../support/jobServer.js"
import { freePort, type RedisServer, startRedis } from "../support/redisServer.js"

afterEach(killLeftovers)

let queues = 0
/** A queue (and job-record store) name no other drill of this run uses. */
const queueName = (drill: string) => `e2e-${process.pid}-${++queues}-${drill}`

/** A job-server process on the shared Redis queue, once it listens. */
const startServer = (label: string, env: Record<string, string>) => startJobServer(label, { JOB_QUEUE: "redis", ...env })

const sorted = (ids: Iterable<string>) => [...ids].sort()

// --- HTTP, every request bounded

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly body: Record<string, unknown>
  readonly ms: number
}

const request = async (url: string, init: RequestInit = {}, timeoutMs = 15_000): Promise<Answer> => {
  const sent = Date.now()
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
  const text = await response.text()
  const isJson = (response.headers.get("content-type") ?? "").includes("application/json")
  return {
    status: response.status,
    headers: response.headers,
    body: isJson ? JSON.parse(text) as Record<string, unknown> : { text },
    ms: Date.now() - sent
  }
}

const sleepJob = (ms: number) => ({ kind: "sleep", payload: { ms } })

const submit = (server: Server, body: unknown, timeoutMs?: number) =>
  request(`${server.base}/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body)
  }, timeoutMs)

const jobRecord = async (server: Server, id: string) => (await request(`${server.base}/jobs/${id}`)).body

/** Polls the records of `ids` on `server` until every one is completed; a failed one, or the time out, rejects. */
const allCompleted = async (server: Server, ids: ReadonlyArray<string>, timeoutMs: number) => {
  const records = new Map<string, Record<string, unknown>>()
  await waitFor(async () => {
    const pending = ids.filter((id) => records.get(id)?.["state"] !== "completed")
    for (const record of await Promise.all(pending.map((id) => jobRecord(server, id)))) {
      if (record["state"] === "failed") throw new Error(`job ${String(record["id"])} failed: ${JSON.stringify(record)}`)
      records.set(String(record["id"]), record)
    }
    return ids.every((id) => records.get(id)?.["state"] === "completed") ? true : undefined
  }, timeoutMs, `${ids.length} jobs completed`, 200).catch((error: Error) => {
    const states = ids.map((id) => `${id}: ${String(records.get(id)?.["state"])}`).join(", ")
    throw new Error(`${error.message}; states: ${states}`)
  })
  return records
}

/** Deterministic durations: mulberry32. */
const seeded = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

describe.sequential("job server on the shared Redis queue", () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.stop()
  })

  it("kill -9 of a process holding jobs: all 60 complete, exactly its in-flight jobs run twice, taken over within lease + 1 s", async () => {
    const workers = 3
    const jobCount = 60
    const leaseMs = 2_000
    const env = {
      REDIS_URL: redis.url,
      QUEUE_NAME: queueName("kill9"),
      JOB_LEASE: `${leaseMs} millis`,
      WORKERS: String(workers)
    }
    const servers = await Promise.all(["first", "second", "third"].map((label) => startServer(label, env)))

    // 9 workers for 60 jobs: they queue up. The last 9 are the longest, so that when every job has started
    // each worker holds one with time left.
    const random = seeded(20_261_122)
    const durations = Array.from(
      { length: jobCount },
      (_, index) => index >= jobCount - servers.length * workers ? 2_000 : 500 + Math.round(random() * 1_500)
    )
    const durationOf = new Map<string, number>()
    for (const [index, ms] of durations.entries()) {
      const answer = await submit(servers[index % servers.length]!, sleepJob(ms))
      expect(answer.status).toBe(202)
      durationOf.set(String(answer.body["id"]), ms)
    }
    const ids = [...durationOf.keys()]

    // The victim: once every job has started (so no lease is taken but not yet logged, and the survivors will
    // be free to take over), a process whose in-flight jobs all have 400 ms or more left (none is completing
    // while it dies) — the one holding the most of them.
    const victim = await waitFor(() => {
      const started = new Set(servers.flatMap((server) => startsIn(server.run.output()).map((start) => start.id)))
      if (started.size < jobCount) return undefined
      const now = Date.now()
      let best: { server: Server; inFlight: Array<Start> } | undefined
      for (const server of servers) {
        const inFlight = inFlightIn(server.run.output())
        if (inFlight.length === 0 || inFlight.some((start) => start.at + durationOf.get(start.id)! - now < 400)) continue
        if (best === undefined || inFlight.length > best.inFlight.length) best = { server, inFlight }
      }
      return best
    }, 60_000, "a process holding jobs once all have started", 10)
    const killedAt = Date.now()
    victim.server.run.signal("SIGKILL")
    expect(await victim.server.run.waitForExit(5_000)).toEqual({ code: null, signal: "SIGKILL" })
    const heldAtKill = sorted(inFlightIn(victim.server.run.output()).map((start) => start.id))
    expect(heldAtKill).toEqual(sorted(victim.inFlight.map((start) => start.id)))
    expect(heldAtKill.length).toBeGreaterThanOrEqual(1)
    const survivors = servers.filter((server) => server !== victim.server)

    const records = await allCompleted(survivors[0]!, ids, 30_000)
    for (const id of ids) {
      expect(records.get(id)).toMatchObject({ id, kind: "sleep", state: "completed", result: { sleptMs: durationOf.get(id) } })
    }

    // At least once, exactly: the jobs started more than once are the victim's in-flight jobs, each twice.
    const startCounts = countBy(servers.flatMap((server) => startsIn(server.run.output()).map((start) => start.id)))
    expect(sorted(startCounts.keys())).toEqual(sorted(ids))
    expect(sorted(ids.filter((id) => startCounts.get(id)! > 1))).toEqual(heldAtKill)
    expect(heldAtKill.map((id) => startCounts.get(id))).toEqual(heldAtKill.map(() => 2))

    // Taken over by a survivor as its second delivery, after the lease could expire and within lease + 1 s.
    const takeovers = heldAtKill.map((id) => {
      const again = survivors.flatMap((server) => startsIn(server.run.output())).filter((start) => start.id === id)
      expect(again.map((start) => start.delivery)).toEqual([2])
      return again[0]!.at - killedAt
    })
    const worst = Math.max(...takeovers)
    console.log(
      `kill -9 drill: victim ${victim.server.label} held ${heldAtKill.length} job(s); takeover after ` +
        `${takeovers.join(", ")} ms (worst ${worst} ms; lease ${leaseMs} ms, bound ${leaseMs + 1_000} ms)`
    )
    expect(Math.min(...takeovers)).toBeGreaterThanOrEqual(1_000) // renewed every third of the lease until the kill
    expect(worst).toBeLessThanOrEqual(leaseMs + 1_000)
  }, 120_000)

  it("SIGTERM: short in-flight jobs complete before exit; jobs cut at the deadline are released and started elsewhere at once", async () => {
    // The work is cut at the 2 s deadline less its grace (half of it, 1 s).
    const drainMs = 2_000
    const cutMs = 1_000
    const longMs = 5_000
    const shortMs = 1_500
    const common = { REDIS_URL: redis.url, QUEUE_NAME: queueName("sigterm"), JOB_LEASE: "10 seconds", WORKERS: "4" }
    const [victim, other] = await Promise.all([
      startServer("victim", { ...common, DRAIN_TIMEOUT: `${drainMs} millis` }),
      startServer("other", common)
    ])
    // The other process is frozen while the victim takes every job, so the victim holds all four.
    other.run.signal("SIGSTOP")
    const longIds: Array<string> = []
    const shortIds: Array<string> = []
    for (const [ms, into] of [[longMs, longIds], [longMs, longIds], [shortMs, shortIds], [shortMs, shortIds]] as const) {
      const answer = await submit(victim, sleepJob(ms))
      expect(answer.status).toBe(202)
      into.push(String(answer.body["id"]))
    }
    const started = await waitFor(() => {
      const starts = startsIn(victim.run.output())
      return starts.length === 4 ? starts : undefined
    }, 10_000, "the victim runs all four jobs")
    expect(sorted(started.map((start) => start.id))).toEqual(sorted([...longIds, ...shortIds]))
    other.run.signal("SIGCONT")
    await waitFor(async () => (await request(`${other.base}/healthz`, {}, 2_000)).status === 200 ? true : undefined, 5_000, "the other process answers")

    // SIGTERM while the short jobs have 200–700 ms left (they finish before the cut at 1 s), the long ones ~4 s.
    const shortStarts = started.filter((start) => shortIds.includes(start.id)).map((start) => start.at)
    await pause(Math.max(...shortStarts) + 800 - Date.now())
    if (Date.now() > Math.min(...shortStarts) + shortMs - 200) throw new Error("too late for the drill: short jobs nearly done")
    const sigtermAt = Date.now()
    victim.run.signal("SIGTERM")
    const exit = await victim.run.waitForExit(15_000)
    const exitedAt = Date.now()
    const shutdownMs = exitedAt - sigtermAt
    const output = victim.run.output()

    // The report says the deadline cut work: exit code 1 by the documented rule (job-server README, Shutdown).
    expect(exit).toEqual({ code: 1, signal: null })
    expect(shutdownReportOf(output)).toMatch(
      /shutdown forced \(deadline reached: work cut after 1s of 2s\): trigger SIGTERM, 2 finished, 2 forced, 2 unfinished/
    )
    expect(shutdownMs).toBeLessThan(drainMs + 1_000)
    // The short jobs completed in the victim before it exited; the long ones were handed back, not completed.
    expect(sorted(completionsIn(output).map((completion) => completion.id))).toEqual(sorted(shortIds))
    const handedBack = output.match(/2 job\(s\) handed back unfinished: (\S+) \(interrupted\), (\S+) \(interrupted\)/)
    expect(sorted([handedBack?.[1] ?? "", handedBack?.[2] ?? ""])).toEqual(sorted(longIds))
    for (const id of shortIds) {
      expect(await jobRecord(other, id)).toMatchObject({ state: "completed", result: { sleptMs: shortMs }, attempts: 1 })
    }

    // The long ones start in the other process at once: after the cut, within 1 s of the victim's exit.
    const takeovers = await waitFor(() => {
      const starts = startsIn(other.run.output()).filter((start) => longIds.includes(start.id))
      return starts.length === longIds.length ? starts : undefined
    }, 5_000, "the other process starts the released jobs")
    for (const start of takeovers) {
      expect(start.delivery).toBe(2)
      expect(start.at).toBeGreaterThanOrEqual(sigtermAt + cutMs - 50)
      expect(start.at - exitedAt).toBeLessThanOrEqual(1_000)
    }
    console.log(
      `SIGTERM drill: exit ${shutdownMs} ms after SIGTERM (deadline ${drainMs} ms); released jobs started elsewhere ` +
        takeovers.map((start) => `${start.at - exitedAt} ms`).join(", ") + " from the victim's exit (lease 10000 ms)"
    )
    const records = await allCompleted(other, longIds, longMs + 10_000)
    for (const id of longIds) expect(records.get(id)).toMatchObject({ state: "completed", result: { sleptMs: longMs } })
    // Only the cut jobs ran twice.
    const startCounts = countBy([victim, other].flatMap((server) => startsIn(server.run.output()).map((start) => start.id)))
    expect([...longIds, ...shortIds].map((id) => startCounts.get(id))).toEqual([2, 2, 1, 1])
  }, 90_000)

  it("lease renewal: jobs running 3× their lease start exactly once and complete", async () => {
    const env = { REDIS_URL: redis.url, QUEUE_NAME: queueName("renewal"), JOB_LEASE: "1 second", WORKERS: "2" }
    const servers = await Promise.all([startServer("first", env), startServer("second", env)])
    const ids: Array<string> = []
    for (let index = 0; index < 4; index++) {
      const answer = await submit(servers[index % 2]!, sleepJob(3_000))
      expect(answer.status).toBe(202)
      ids.push(String(answer.body["id"]))
    }
    const records = await allCompleted(servers[0]!, ids, 20_000)
    for (const id of ids) {
      expect(records.get(id)).toMatchObject({ state: "completed", result: { sleptMs: 3_000 }, attempts: 1 })
    }
    const starts = servers.flatMap((server) => startsIn(server.run.output())).filter((start) => ids.includes(start.id))
    expect(sorted(starts.map((start) => start.id))).toEqual(sorted(ids))
    expect(starts.map((start) => start.delivery)).toEqual([1, 1, 1, 1])
    const completions = servers.flatMap((server) => completionsIn(server.run.output()))
    expect(sorted(completions.map((completion) => completion.id))).toEqual(sorted(ids))
    for (const start of starts) {
      const ran = completions.find((completion) => completion.id === start.id)!.at - start.at
      expect(ran).toBeGreaterThanOrEqual(3_000) // one run, three leases long
    }
  }, 90_000)

  it("Redis restarted (AOF) mid-run: every accepted job completes, refusals while it is down are 503", async () => {
    const persistent = await startRedis({ appendonly: true })
    try {
      const env = { REDIS_URL: persistent.url, QUEUE_NAME: queueName("restart"), JOB_LEASE: "2 seconds", WORKERS: "2" }
      const servers = await Promise.all([startServer("first", env), startServer("second", env)])
      const random = seeded(7)
      const accepted: Array<string> = []
      for (let index = 0; index < 30; index++) {
        const answer = await submit(servers[index % 2]!, sleepJob(300 + Math.round(random() * 900)))
        expect(answer.status).toBe(202)
        accepted.push(String(answer.body["id"]))
      }
      await waitFor(
        () => servers.flatMap((server) => completionsIn(server.run.output())).length >= 6 ? true : undefined,
        20_000,
        "6 jobs completed"
      )
      await persistent.halt()
      const haltedAt = Date.now()
      const completedBeforeHalt = new Set(servers.flatMap((server) => completionsIn(server.run.output()).map((c) => c.id)))

      // Submissions go on through the outage: one sent every 100 ms (without waiting for the previous answer),
      // alternating between the processes.
      const answers: Array<Answer & { sentAt: number }> = []
      const errors: Array<string> = []
      const posts: Array<Promise<void>> = []
      let submitting = true
      const submitter = (async () => {
        for (let index = 0; submitting && index < 300; index++) {
          const sentAt = Date.now()
          posts.push(submit(servers[index % 2]!, sleepJob(200), 15_000).then(
            (answer) => void answers.push({ ...answer, sentAt }),
            (error) => void errors.push(`${sentAt - haltedAt} ms after the halt: ${String(error)}`)
          ))
          await pause(100)
        }
      })()
      // Down for at least a second, and until a refusal has been seen.
      await waitFor(
        () => Date.now() - haltedAt >= 1_000 && answers.some((answer) => answer.status === 503) ? true : undefined,
        20_000,
        "a submission refused while Redis is down"
      )
      await persistent.restart()
      const restartedAt = Date.now()
      await waitFor(
        () => answers.some((answer) => answer.status === 202 && answer.sentAt >= restartedAt) ? true : undefined,
        20_000,
        "a submission accepted after the restart"
      )
      submitting = false
      await submitter
      await Promise.all(posts)

      expect(errors).toEqual([])
      expect(answers.filter((answer) => answer.status !== 202 && answer.status !== 503)).toEqual([])
      const refused = answers.filter((answer) => answer.status === 503)
      for (const answer of refused) {
        expect(["StoreUnavailable", "QueueUnavailable"]).toContain(answer.body["error"])
        expect(typeof answer.body["message"]).toBe("string")
        expect(answer.headers.get("retry-after")).toBe("1")
      }
      accepted.push(...answers.filter((answer) => answer.status === 202).map((answer) => String(answer.body["id"])))
      const records = await allCompleted(servers[0]!, accepted, 45_000)
      expect(accepted.filter((id) => records.get(id)?.["state"] !== "completed")).toEqual([])
      // The processes reconnected by themselves and still serve.
      for (const server of servers) {
        expect(server.run.child.exitCode).toBe(null)
        expect((await request(`${server.base}/healthz`)).status).toBe(200)
      }
      const redelivered = servers.flatMap((server) => startsIn(server.run.output())).filter((start) => start.delivery > 1)
      console.log(
        `Redis restart drill: halted after ${completedBeforeHalt.size} of 30 jobs completed, down ${restartedAt - haltedAt} ms; ` +
          `${refused.length} submission(s) refused with 503 ` +
          `(slowest answer ${Math.max(...refused.map((answer) => answer.ms))} ms), ${accepted.length} accepted, all completed; ` +
          `${redelivered.length} redelivery(ies)`
      )
    } finally {
      await persistent.stop()
    }
  }, 120_000)

  it("Redis unreachable (stopped, never there, or hung): 503 with a JSON body in bounded time, health answers, SIGTERM exits within the deadline + 3 s", async () => {
    const drainMs = 2_000
    const requestTimeoutMs = 10_000
    const doomed = await startRedis()
    // A Redis that stops answering without closing anything (frozen, or behind a network partition).
    const hung = await startRedis()
    try {
      const common = { QUEUE_NAME: queueName("unreachable"), DRAIN_TIMEOUT: `${drainMs} millis`, REQUEST_TIMEOUT: `${requestTimeoutMs} millis`, WORKERS: "2" }
      const nowhere = await freePort() // no Redis ever listens there
      const [halted, never, frozen] = await Promise.all([
        startServer("redis halted after start", { ...common, REDIS_URL: doomed.url }),
        startServer("redis never there", { ...common, REDIS_URL: `redis://127.0.0.1:${nowhere}` }),
        startServer("redis hung after start", { ...common, REDIS_URL: hung.url })
      ])
      const first = await submit(halted, sleepJob(50))
      expect(first.status).toBe(202)
      await allCompleted(halted, [String(first.body["id"])], 10_000)
      await doomed.halt()
      hung.process().kill("SIGSTOP")

      for (const server of [halted, never, frozen]) {
        const refused = await submit(server, sleepJob(50), requestTimeoutMs + 5_000)
        expect(refused.status).toBe(503)
        expect(refused.headers.get("content-type")).toContain("application/json")
        expect(refused.headers.get("retry-after")).toBe("1")
        expect(refused.body).toMatchObject({ error: "StoreUnavailable", message: expect.stringMatching(/^job store unavailable: /) })
        expect(refused.ms).toBeLessThan(requestTimeoutMs)
        const lookup = await request(`${server.base}/jobs/${String(first.body["id"])}`)
        expect(lookup.status).toBe(503)
        expect(lookup.body).toMatchObject({ error: "StoreUnavailable" })
        expect(await request(`${server.base}/healthz`)).toMatchObject({ status: 200, body: { text: "ok" } })
        expect(await request(`${server.base}/readyz`)).toMatchObject({ status: 200, body: { ready: true } })
        console.log(`Redis unreachable drill (${server.label}): POST /jobs answered 503 in ${refused.ms} ms`)
      }

      const shutdowns = await Promise.all([halted, never, frozen].map(async (server) => {
        const sigtermAt = Date.now()
        server.run.signal("SIGTERM")
        const exit = await server.run.waitForExit(drainMs + 10_000)
        return { server, exit, ms: Date.now() - sigtermAt }
      }))
      for (const { exit, ms, server } of shutdowns) {
        console.log(`Redis unreachable drill (${server.label}): exit ${ms} ms after SIGTERM (deadline ${drainMs} ms)`)
        expect(exit).toEqual({ code: 0, signal: null })
        expect(ms).toBeLessThanOrEqual(drainMs + 3_000)
        expect(shutdownReportOf(server.run.output())).toMatch(/shutdown clean: trigger SIGTERM/)
      }
    } finally {
      hung.process().kill("SIGCONT")
      await Promise.all([doomed.stop(), hung.stop()])
    }
  }, 90_000)
})
