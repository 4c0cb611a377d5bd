/**
 * The job server's `/metrics` as an operator's Prometheus sees it: a real redis-server, a job-server process
 * on the shared queue (`JOB_QUEUE=redis`, one worker) and Debian's real `prometheus`, scraping the server every
 * second and queried through its HTTP API. While a long job holds the only worker, Prometheus shows the jobs
 * posted after it waiting (`keel_queue_jobs{state="ready"}`) and the one leased; once they have ended, the
 * queue's series and the pool's hold the values their outcomes imply. Every wait is bounded, and every process
 * is stopped at the end.
 */
import { afterAll, describe, expect, it } from "vitest"
import { killLeftovers } from "../support/childProcess.js"
import { type JobServer, startJobServer, waitFor } from "../support/jobServer.js"
import { type Prometheus, startPrometheus } from "../support/prometheus.js"
import { startRedis } from "../support/redisServer.js"

afterAll(killLeftovers)

const queueName = `prometheus-${process.pid}`

const post = async (server: JobServer, job: unknown) => {
  const response = await fetch(`${server.base}/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(job),
    signal: AbortSignal.timeout(5_000)
  })
  expect(response.status).toBe(202)
  return String(((await response.json()) as Record<string, unknown>)["id"])
}

const stateOf = async (server: JobServer, id: string) => {
  const response = await fetch(`${server.base}/jobs/${id}`, { signal: AbortSignal.timeout(5_000) })
  return String(((await response.json()) as Record<string, unknown>)["state"])
}

/** The queue's and the pool's series as Prometheus has them now, one value per series (undefined if absent). */
const scraped = async (prometheus: Prometheus) => {
  const valueOf = async (expression: string) => (await prometheus.query(expression))[0]?.value
  const jobs = await prometheus.query(`keel_queue_jobs{queue="${queueName}"}`)
  return {
    up: await valueOf(`up{job="keel"}`),
    jobs: Object.fromEntries(jobs.map((sample) => [sample.labels["state"], sample.value])),
    takeovers: await valueOf(`keel_queue_lease_takeovers_total{queue="${queueName}"}`),
    renewalsFailed: await valueOf(`keel_queue_lease_renewals_failed_total{queue="${queueName}"}`),
    deadLettered: await valueOf(`keel_queue_dead_lettered_total{queue="${queueName}"}`),
    completed: await valueOf(`keel_pool_jobs_completed_total{pool="jobs"}`),
    failed: await valueOf(`keel_pool_jobs_failed_total{pool="jobs"}`)
  }
}

type Scraped = Awaited<ReturnType<typeof scraped>>

/** Queries Prometheus every 250 ms until `done` holds of what it has; rejects with the last answer after `ms`. */
const scrapedUntil = async (prometheus: Prometheus, done: (answer: Scraped) => boolean, ms: number, what: string) => {
  let last: Scraped | undefined
  return waitFor(async () => {
    last = await scraped(prometheus)
    return done(last) ? last : undefined
  }, ms, what, 250).catch((error: Error) => {
    throw new Error(`${error.message}; Prometheus last had ${JSON.stringify(last)}`)
  })
}

/** Stops the job server as its operator would: SIGTERM, then SIGKILL if it has not exited 30 s later. */
const stopServer = async (server: JobServer) => {
  server.run.signal("SIGTERM")
  await server.run.waitForExit(30_000)
}

describe("the job server scraped by a real Prometheus", () => {
  it("shows the shared queue's jobs by state and lease events, and the pool's outcomes, with the values of the jobs posted", async () => {
    // What was started, stopped in reverse order however the test ends.
    const stops: Array<() => Promise<unknown>> = []
    try {
      const redis = await startRedis()
      stops.push(redis.stop)
      const server = await startJobServer("scraped", {
        JOB_QUEUE: "redis",
        REDIS_URL: redis.url,
        QUEUE_NAME: queueName,
        WORKERS: "1",
        JOB_MAX_ATTEMPTS: "1"
      })
      stops.push(() => stopServer(server))
      const prometheus = await startPrometheus({ targets: [`127.0.0.1:${server.port}`], scrapeIntervalSeconds: 1 })
      stops.push(prometheus.stop)

      // The sleep holds the only worker for 8 s: meanwhile the three jobs after it wait in the queue.
      const ids = [
        await post(server, { kind: "sleep", payload: { ms: 8_000 } }),
        await post(server, { kind: "noop", payload: {} }),
        await post(server, { kind: "noop", payload: {} }),
        await post(server, { kind: "flaky", payload: { failureRate: 1 } })
      ]
      const busy = await scrapedUntil(
        prometheus,
        ({ jobs }) => jobs["ready"] === 3 && jobs["leased"] === 1,
        7_000,
        "3 jobs ready and 1 leased"
      )
      expect(busy).toMatchObject({ up: 1, jobs: { ready: 3, leased: 1, delayed: 0, dead: 0 }, completed: 0 })

      await waitFor(async () => {
        const states = await Promise.all(ids.map((id) => stateOf(server, id)))
        return states.every((state) => state === "completed" || state === "failed") ? states : undefined
      }, 20_000, "every job ended", 200)
      const ended = await scrapedUntil(
        prometheus,
        ({ completed, jobs }) => completed === 3 && jobs["dead"] === 1 && jobs["ready"] === 0,
        10_000,
        "3 jobs completed and 1 dead"
      )
      expect(ended).toEqual({
        up: 1,
        jobs: { ready: 0, leased: 0, delayed: 0, dead: 1 },
        takeovers: 0,
        renewalsFailed: 0,
        deadLettered: 1,
        completed: 3,
        failed: 1
      })
    } finally {
      for (const stop of stops.reverse()) await stop()
    }
  }, 90_000)
})
