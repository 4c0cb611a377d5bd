/**
 * Keel's Redis JobQueue (keel/redis, run by `WorkerPool.consume`) against BullMQ, the usual Redis job queue of
 * Node: same redis-server, same machine, same run, 3 worker processes each, the same concurrency in every worker
 * (BENCH_QUEUE_CONCURRENCY, default 50). The question is whether a queue built on Redis Streams and one Lua
 * script per state change keeps up with BullMQ, and how much sooner it hands a crashed worker's jobs to another.
 *
 * redis-server runs on a free port (listened on at port 0, then closed), persistence off (`--save ""
 * --appendonly no`), its `--dir` a fresh temporary directory; the database is flushed after every measurement,
 * and every measurement uses a queue name of its own. Workers are bench/fixtures/keel-queue-worker.ts and
 * bench/fixtures/bullmq-worker.ts, started as `node --import tsx <fixture>`; each prints `ready` once connected
 * and takes nothing before the bench writes `go` to its stdin, so process start-up is not measured.
 *
 *   (a) Throughput. BENCH_QUEUE_JOBS no-op jobs (default 30000) are enqueued from this process — Keel: `offer`,
 *       100 in flight on one connection (the contract has no batch offer); BullMQ: `addBulk`, 1000 jobs a call,
 *       one call at a time — and the enqueue rate is reported. Then 3 workers start at one `go`, and the clock
 *       runs until Redis itself says every job is settled: Keel's `depth` (ready + leased + delayed = 0; an acked
 *       job leaves Redis), BullMQ's `getJobCounts("completed", "failed")` (completed + failed = N; BullMQ keeps
 *       completed jobs by default). Polled every 10 ms. Keel's lease here is 30 s, BullMQ's lockDuration.
 *       Warm-up: one run of each with min(N, 1000) jobs. Then BENCH_QUEUE_ROUNDS rounds (default 3), the two
 *       systems alternating which goes first; medians, and the ratio Keel / BullMQ (target ≥ 1.0×). Each worker
 *       process runs 10,000 jobs, several seconds: the rate of workers past their start-up, as a worker fleet
 *       mostly is. Then the same with BENCH_QUEUE_BURST_JOBS jobs (default 6000; 0 skips it): a short burst
 *       where each fresh process runs about 2000 jobs, well under a second of work, so the figure includes the
 *       JIT's warm-up of each process (reported beside the target, not as it).
 *   (b) Takeover after kill -9. 3 workers, 3 × concurrency / 2 jobs that each sleep 5 s (so every job is running
 *       at once and the survivors have free slots for the killed worker's share); each job prints
 *       `start <id> <delivery>` when it begins. Once every job has started, and 1 s later, the worker holding the
 *       most jobs is killed with SIGKILL; takeover is the time from the kill until every job it held has been
 *       started again by another worker (the latest of those start lines, time-stamped as this process reads
 *       them). Keel: lease 2 s, target ≤ lease + 1 s, BENCH_QUEUE_ROUNDS rounds, worst and median reported.
 *       BullMQ: its defaults (lockDuration 30 s, stalledInterval 30 s), so expect 30–60 s; the wait is capped
 *       at 70 s, and it runs BENCH_QUEUE_BULLMQ_TAKEOVER_ROUNDS rounds (default 1) to keep the whole run near
 *       3 minutes.
 *
 * Every wait is bounded. Workers are stopped with SIGTERM (SIGKILL 10 s later if still there) after each
 * measurement, redis-server at the end; any child still running when this process exits, by error or signal,
 * is killed.
 */
import { Duration, Effect, Exit, Scope } from "effect"
import { Queue as BullQueue } from "bullmq"
import { Redis } from "ioredis"
import { RedisJobQueue } from "keel/redis"
import type { ChildProcess } from "node:child_process"
import { readFileSync, rmSync } from "node:fs"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import {
  benchPath,
  describeExit,
  finish,
  max,
  median,
  ms,
  perSecond,
  ratio,
  section,
  spawnTs,
  stopServer,
  verdict
} from "./lib.js"
import type { Row } from "./lib.js"
import { type RedisServer, startRedisServer } from "./redis.js"

const jobs = Number(process.env["BENCH_QUEUE_JOBS"] ?? 30_000)
const burstJobs = Number(process.env["BENCH_QUEUE_BURST_JOBS"] ?? 6_000)
const rounds = Number(process.env["BENCH_QUEUE_ROUNDS"] ?? 3)
const concurrency = Number(process.env["BENCH_QUEUE_CONCURRENCY"] ?? 50)
const bullmqTakeoverRounds = Math.min(rounds, Number(process.env["BENCH_QUEUE_BULLMQ_TAKEOVER_ROUNDS"] ?? 1))
const workerCount = 3
const warmUpJobs = Math.min(jobs, 1_000)
const keelOffersInFlight = 100
const bullmqBulkSize = 1_000
const throughputLeaseMs = 30_000
const takeoverLeaseMs = 2_000
const takeoverTargetMs = takeoverLeaseMs + 1_000
const takeoverJobMs = 5_000
const takeoverJobs = Math.ceil((workerCount * concurrency) / 2)
/** How long after the last job started the victim is killed: Keel's leases (renewed every third) have been renewed by then. */
const holdBeforeKillMs = 1_000
const takeoverCapMs = 70_000
const pollMs = 10
const readyTimeoutMs = 30_000
/** A throughput run slower than 200 jobs/s, plus a minute, is abandoned. */
const throughputTimeoutMs = (count: number) => 60_000 + count * 5

// ---------------------------------------------------------------------------------------------------------------
// Processes

/**
 * Every child started and not yet seen exiting, killed outright if this process exits first (by error or
 * signal), and redis-server's directory, removed then.
 */
const running = new Set<ChildProcess>()
let redisDirectory: string | undefined
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL")
  if (redisDirectory !== undefined) rmSync(redisDirectory, { recursive: true, force: true })
})
process.once("SIGINT", () => process.exit(130))
process.once("SIGTERM", () => process.exit(143))

const track = (child: ChildProcess) => {
  running.add(child)
  child.once("exit", () => running.delete(child))
}



// ---------------------------------------------------------------------------------------------------------------
// The two systems: a producer in this process, and the worker fixture

interface Producer {
  /** Enqueues `count` no-op jobs. */
  readonly enqueue: (count: number) => Promise<void>
  /** Jobs settled so far according to Redis, and how many of them failed (dead-lettered / failed). */
  readonly progress: () => Promise<{ readonly settled: number; readonly failed: number }>
  readonly close: () => Promise<void>
}

interface System {
  readonly name: string
  readonly fixture: string
  readonly open: (url: string, queueName: string, leaseMs: number) => Promise<Producer>
  /** What the worker fixture needs besides REDIS_URL, the queue name, the concurrency and the job duration. */
  readonly workerEnv: (leaseMs: number) => Readonly<Record<string, string>>
}

const keel: System = {
  name: "Keel",
  fixture: "fixtures/keel-queue-worker.ts",
  workerEnv: (leaseMs) => ({ BENCH_QUEUE_LEASE_MS: String(leaseMs) }),
  open: async (url, queueName, leaseMs) => {
    const scope = Effect.runSync(Scope.make())
    const queue = await Effect.runPromise(Scope.extend(
      RedisJobQueue.make({
        redis: { url },
        name: queueName,
        capacity: 10_000_000,
        leaseDuration: Duration.millis(leaseMs),
        maxDeliveries: 10
      }),
      scope
    ))
    let enqueued = 0
    return {
      enqueue: (count) =>
        Effect.runPromise(Effect.forEach(
          Array.from({ length: count }),
          () => Effect.tap(queue.offer({}), () => void enqueued++),
          { concurrency: keelOffersInFlight, discard: true }
        )),
      progress: () =>
        Effect.runPromise(queue.depth).then((depth) => ({
          settled: enqueued - depth.ready - depth.leased - depth.delayed,
          failed: depth.dead
        })),
      close: () => Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

const bullmq: System = {
  name: "BullMQ",
  fixture: "fixtures/bullmq-worker.ts",
  workerEnv: () => ({}),
  open: async (url, queueName) => {
    const connection = new Redis(url, { maxRetriesPerRequest: null })
    const queue = new BullQueue(queueName, { connection })
    await queue.waitUntilReady()
    return {
      enqueue: async (count) => {
        for (let offset = 0; offset < count; offset += bullmqBulkSize) {
          const size = Math.min(bullmqBulkSize, count - offset)
          await queue.addBulk(Array.from({ length: size }, () => ({ name: "noop", data: {} })))
        }
      },
      progress: async () => {
        const counts = await queue.getJobCounts("completed", "failed")
        return { settled: (counts["completed"] ?? 0) + (counts["failed"] ?? 0), failed: counts["failed"] ?? 0 }
      },
      close: async () => {
        await queue.close()
        await connection.quit().catch(() => "")
      }
    }
  }
}

const systems = [keel, bullmq] as const

// ---------------------------------------------------------------------------------------------------------------
// Worker processes

interface JobEvent {
  readonly worker: number
  readonly kind: "start" | "done"
  readonly id: string
  readonly delivery: number
  /** performance.now() when this process read the line. */
  readonly at: number
}

interface WorkerProcess {
  readonly index: number
  readonly child: ChildProcess
  readonly events: Array<JobEvent>
  /** Killed on purpose by the takeover measurement: its exit is not reported. */
  killed: boolean
  /** The tail of what it printed, for error messages. */
  readonly output: () => string
}

const startWorker = (
  system: System,
  index: number,
  env: Readonly<Record<string, string>>
): Promise<WorkerProcess> =>
  new Promise((resolve, reject) => {
    const child = spawnTs(benchPath(system.fixture), { stdio: ["pipe", "pipe", "pipe"], env })
    track(child)
    const events: Array<JobEvent> = []
    let output = ""
    let partial = ""
    let ready = false
    const worker: WorkerProcess = { index, child, events, killed: false, output: () => output }
    child.stdout!.on("data", (chunk: Buffer) => {
      const at = performance.now()
      const text = chunk.toString()
      output = (output + text).slice(-20_000)
      const lines = (partial + text).split("\n")
      partial = lines.pop()!
      for (const line of lines) {
        const event = /^(start|done) (\S+) (\d+)$/.exec(line)
        if (event !== null) {
          events.push({ worker: index, kind: event[1] as JobEvent["kind"], id: event[2]!, delivery: Number(event[3]), at })
        } else if (line === "ready" && !ready) {
          ready = true
          clearTimeout(timer)
          resolve(worker)
        }
      }
    })
    child.stderr!.on("data", (chunk: Buffer) => void (output = (output + chunk.toString()).slice(-20_000)))
    const fail = (message: string) => {
      clearTimeout(timer)
      child.kill("SIGKILL")
      reject(new Error(`${system.name} worker ${index} (${system.fixture}): ${message}\n--- its output ---\n${output}`))
    }
    const timer = setTimeout(() => fail(`not ready within ${readyTimeoutMs} ms`), readyTimeoutMs)
    child.on("error", (error) => fail(error.message))
    child.on("exit", (code, signal) => {
      if (!ready) fail(`exited (code ${code}, signal ${signal}) before printing ready`)
    })
  })

/** Starts the workers and waits until all are ready (any that did start are stopped if one fails). */
const startWorkers = async (system: System, env: Readonly<Record<string, string>>): Promise<Array<WorkerProcess>> => {
  const started = await Promise.allSettled(Array.from({ length: workerCount }, (_, index) => startWorker(system, index + 1, env)))
  const workers = started.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []))
  const failure = started.find((result) => result.status === "rejected")
  if (failure !== undefined) {
    await stopWorkers(system, workers)
    throw (failure as PromiseRejectedResult).reason
  }
  return workers
}

const go = (workers: ReadonlyArray<WorkerProcess>) => {
  for (const worker of workers) worker.child.stdin!.write("go\n")
}

const exited = (worker: WorkerProcess) => worker.child.exitCode !== null || worker.child.signalCode !== null

/** SIGTERM to each worker still running; reports the ones that did not exit with code 0. */
const stopWorkers = async (system: System, workers: ReadonlyArray<WorkerProcess>) => {
  const exits = await Promise.all(workers.map(async (worker) => {
    const wasRunning = !exited(worker) && !worker.killed
    return { worker, wasRunning, exit: await stopServer(`${system.name} worker ${worker.index}`, worker.child) }
  }))
  for (const { worker, wasRunning, exit } of exits) {
    if (wasRunning && exit.code !== 0) {
      console.log(`${system.name} worker ${worker.index}: ${describeExit(exit)}; its output:\n${worker.output()}`)
    }
  }
}

const workerEnv = (system: System, redis: RedisServer, queueName: string, leaseMs: number, jobMs: number) => ({
  REDIS_URL: redis.url,
  BENCH_QUEUE_NAME: queueName,
  BENCH_QUEUE_CONCURRENCY: String(concurrency),
  BENCH_QUEUE_JOB_MS: String(jobMs),
  ...system.workerEnv(leaseMs)
})

let queueSequence = 0
const freshQueueName = (system: System, what: string) => `bench-${system.name.toLowerCase()}-${what}-${++queueSequence}`

// ---------------------------------------------------------------------------------------------------------------
// (a) Throughput

interface Throughput {
  readonly enqueuePerSecond: number
  readonly jobsPerSecond: number
  readonly durationMs: number
  readonly failed: number
}

const measureThroughput = async (system: System, redis: RedisServer, count: number): Promise<Throughput> => {
  const queueName = freshQueueName(system, "throughput")
  const producer = await system.open(redis.url, queueName, throughputLeaseMs)
  try {
    const enqueueStart = performance.now()
    await producer.enqueue(count)
    const enqueueMs = performance.now() - enqueueStart
    const workers = await startWorkers(system, workerEnv(system, redis, queueName, throughputLeaseMs, 0))
    try {
      const startedAt = performance.now()
      go(workers)
      const deadline = startedAt + throughputTimeoutMs(count)
      while (true) {
        const progress = await producer.progress()
        const now = performance.now()
        if (progress.settled >= count) {
          const durationMs = now - startedAt
          return { enqueuePerSecond: count / (enqueueMs / 1000), jobsPerSecond: count / (durationMs / 1000), durationMs, failed: progress.failed }
        }
        const crashed = workers.find(exited)
        if (crashed !== undefined) {
          throw new Error(`${system.name} worker ${crashed.index} exited during the run; its output:\n${crashed.output()}`)
        }
        if (now > deadline) throw new Error(`${system.name}: ${progress.settled} of ${count} jobs settled after ${ms(now - startedAt)}`)
        await sleep(pollMs)
      }
    } finally {
      await stopWorkers(system, workers)
    }
  } finally {
    await producer.close()
    await redis.admin.flushall()
  }
}

const describeThroughput = (system: System, result: Throughput) =>
  `${system.name} ${perSecond(result.jobsPerSecond)} (${ms(result.durationMs)}), enqueue ${perSecond(result.enqueuePerSecond)}` +
  (result.failed > 0 ? `, ${result.failed} FAILED` : "")

// ---------------------------------------------------------------------------------------------------------------
// (b) Takeover after kill -9

interface Takeover {
  /** Undefined when capped: not every held job had started again within `takeoverCapMs`. */
  readonly takeoverMs: number | undefined
  readonly held: number
  readonly restarted: number
  readonly victim: number
  /** The deliveries (Keel) / attemptsStarted (BullMQ) printed by the restarts. */
  readonly deliveries: ReadonlyArray<number>
}

/** Polls `condition` every `pollMs` until it holds (true) or `timeoutMs` has passed (false). */
const waitUntil = async (condition: () => boolean, timeoutMs: number): Promise<boolean> => {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) return false
    await sleep(pollMs)
  }
  return true
}

const measureTakeover = async (system: System, redis: RedisServer): Promise<Takeover> => {
  const queueName = freshQueueName(system, "takeover")
  const producer = await system.open(redis.url, queueName, takeoverLeaseMs)
  try {
    await producer.enqueue(takeoverJobs)
    const workers = await startWorkers(system, workerEnv(system, redis, queueName, takeoverLeaseMs, takeoverJobMs))
    try {
      const events = () => workers.flatMap((worker) => worker.events)
      const started = () => new Set(events().filter((event) => event.kind === "start").map((event) => event.id)).size
      go(workers)
      if (!(await waitUntil(() => started() >= takeoverJobs, readyTimeoutMs))) {
        throw new Error(`${system.name}: only ${started()} of ${takeoverJobs} jobs started within ${readyTimeoutMs} ms`)
      }
      await sleep(holdBeforeKillMs)
      const heldBy = (worker: WorkerProcess) => {
        const running = new Set<string>()
        for (const event of worker.events) {
          if (event.kind === "start") running.add(event.id)
          else running.delete(event.id)
        }
        return running
      }
      const victim = workers.reduce((most, worker) => (heldBy(worker).size > heldBy(most).size ? worker : most))
      const held = heldBy(victim)
      if (held.size === 0) throw new Error(`${system.name}: no worker holds a job ${ms(holdBeforeKillMs)} after all started`)
      victim.killed = true
      victim.child.kill("SIGKILL")
      const killedAt = performance.now()
      const restartOf = (id: string) =>
        events().find((event) => event.kind === "start" && event.id === id && event.worker !== victim.index && event.at > killedAt)
      const all = await waitUntil(() => [...held].every((id) => restartOf(id) !== undefined), takeoverCapMs)
      const restarts = [...held].flatMap((id) => restartOf(id) ?? [])
      return {
        takeoverMs: all ? max(restarts.map((event) => event.at - killedAt)) : undefined,
        held: held.size,
        restarted: restarts.length,
        victim: victim.index,
        deliveries: [...new Set(restarts.map((event) => event.delivery))].sort((a, b) => a - b)
      }
    } finally {
      await stopWorkers(system, workers)
    }
  } finally {
    await producer.close()
    await redis.admin.flushall()
  }
}

const describeTakeover = (system: System, result: Takeover) =>
  `${system.name}: killed worker ${result.victim} holding ${result.held} job(s); ` +
  (result.takeoverMs === undefined
    ? `only ${result.restarted} started again within ${ms(takeoverCapMs)} (capped)`
    : `all started again by others ${ms(result.takeoverMs)} after the kill`) +
  (result.deliveries.length > 0 ? ` (as delivery ${result.deliveries.join(", ")})` : "")

// ---------------------------------------------------------------------------------------------------------------
// The measurement

const bullmqVersion = (JSON.parse(readFileSync(benchPath("../node_modules/bullmq/package.json"), "utf8")) as { version: string }).version

const measure = async (): Promise<ReadonlyArray<Row>> => {
  const directory = await mkdtemp(join(tmpdir(), "keel-jobqueue-bench-"))
  redisDirectory = directory
  let redis: RedisServer | undefined
  try {
    redis = await startRedisServer(directory, track)
    section(
      `job queue: Keel (keel/redis, WorkerPool.consume) vs BullMQ ${bullmqVersion}, redis-server ${redis.version} on ` +
        `${redis.url}, ${workerCount} worker processes each, concurrency ${concurrency} per worker`
    )
    console.log(
      `throughput: ${jobs} no-op jobs, enqueued first (Keel: offer, ${keelOffersInFlight} in flight; BullMQ: addBulk of ` +
        `${bullmqBulkSize}), then workers started at once; settled counted in Redis every ${pollMs} ms; Keel lease ` +
        `${ms(throughputLeaseMs)}; warm-up ${warmUpJobs} jobs, ${rounds} rounds`
    )

    for (const system of systems) {
      console.log(`warm-up: ${describeThroughput(system, await measureThroughput(system, redis, warmUpJobs))}`)
    }
    /** BENCH_QUEUE_ROUNDS rounds of `count` jobs, the systems alternating which goes first; medians. */
    const throughputRounds = async (count: number, label: string) => {
      const results = new Map<System, Array<Throughput>>(systems.map((system) => [system, []]))
      for (let round = 1; round <= rounds; round++) {
        const order = round % 2 === 1 ? systems : [...systems].reverse()
        const line: Array<string> = []
        for (const system of order) {
          const result = await measureThroughput(system, redis!, count)
          results.get(system)!.push(result)
          line.push(describeThroughput(system, result))
        }
        console.log(`${label}round ${round}: ${line.join("; ")}`)
      }
      const jobsPerSecond = (system: System) => median(results.get(system)!.map((result) => result.jobsPerSecond))
      const enqueuePerSecond = (system: System) => median(results.get(system)!.map((result) => result.enqueuePerSecond))
      console.log(
        `${label}medians: ${systems.map((system) => `${system.name} ${perSecond(jobsPerSecond(system))}, enqueue ${perSecond(enqueuePerSecond(system))}`).join("; ")}`
      )
      return { jobsPerSecond, enqueuePerSecond, ratio: jobsPerSecond(keel) / jobsPerSecond(bullmq), enqueueRatio: enqueuePerSecond(keel) / enqueuePerSecond(bullmq) }
    }
    const steady = await throughputRounds(jobs, "")
    const { jobsPerSecond, enqueuePerSecond, ratio: throughputRatio, enqueueRatio } = steady
    console.log(`Keel / BullMQ: jobs ${ratio(throughputRatio)} (target ≥ 1.0×: ${verdict(throughputRatio >= 1)}), enqueue ${ratio(enqueueRatio)}`)
    let burst: Awaited<ReturnType<typeof throughputRounds>> | undefined
    if (burstJobs > 0) {
      console.log(`\nshort burst: ${burstJobs} no-op jobs, fresh workers as above (each process's start-up and JIT warm-up included)`)
      burst = await throughputRounds(burstJobs, "burst ")
      console.log(`Keel / BullMQ, short burst: jobs ${ratio(burst.ratio)}, enqueue ${ratio(burst.enqueueRatio)}`)
    }

    console.log(
      `\ntakeover: ${takeoverJobs} jobs of ${ms(takeoverJobMs)}, the worker holding the most killed with SIGKILL ` +
        `${ms(holdBeforeKillMs)} after the last one started; Keel lease ${ms(takeoverLeaseMs)} (${rounds} rounds), ` +
        `BullMQ defaults (lockDuration 30 s, stalledInterval 30 s; ${bullmqTakeoverRounds} round(s), capped at ${ms(takeoverCapMs)})`
    )
    const takeovers = new Map<System, Array<Takeover>>(systems.map((system) => [system, []]))
    for (let round = 1; round <= rounds; round++) {
      for (const system of systems) {
        if (system === bullmq && round > bullmqTakeoverRounds) continue
        const result = await measureTakeover(system, redis)
        takeovers.get(system)!.push(result)
        console.log(`round ${round}: ${describeTakeover(system, result)}`)
      }
    }
    // A capped round counts as the cap itself: at least that long.
    const takeoverTimes = (system: System) => takeovers.get(system)!.map((result) => result.takeoverMs ?? takeoverCapMs)
    const capped = (system: System) => takeovers.get(system)!.some((result) => result.takeoverMs === undefined)
    const describeTime = (system: System, value: number) => (capped(system) && value >= takeoverCapMs ? `> ${ms(takeoverCapMs)} (capped)` : ms(value))
    const keelWorst = max(takeoverTimes(keel))
    const keelMedian = median(takeoverTimes(keel))
    const bullmqMedian = median(takeoverTimes(bullmq))
    const takeoverRatio = keelMedian / bullmqMedian
    console.log(
      `Keel: worst ${describeTime(keel, keelWorst)}, median ${describeTime(keel, keelMedian)} (target ≤ lease + 1 s = ` +
        `${ms(takeoverTargetMs)}: ${verdict(keelWorst <= takeoverTargetMs)}); BullMQ: median ${describeTime(bullmq, bullmqMedian)}; ` +
        `Keel / BullMQ ${capped(bullmq) ? "≤ " : ""}${ratio(takeoverRatio)}`
    )

    const throughputBenchmark = `job queue, ${workerCount} workers × ${concurrency}`
    const takeoverBenchmark = "job queue, takeover after kill -9"
    return [
      { benchmark: throughputBenchmark, metric: "no-op jobs/s, Keel, median", value: perSecond(jobsPerSecond(keel)), target: "" },
      { benchmark: throughputBenchmark, metric: "no-op jobs/s, BullMQ, median", value: perSecond(jobsPerSecond(bullmq)), target: "" },
      { benchmark: throughputBenchmark, metric: "jobs/s, Keel / BullMQ", value: ratio(throughputRatio), target: "≥ 1.0×", met: throughputRatio >= 1 },
      { benchmark: throughputBenchmark, metric: "enqueue/s, Keel, median", value: perSecond(enqueuePerSecond(keel)), target: "" },
      { benchmark: throughputBenchmark, metric: "enqueue/s, BullMQ, median", value: perSecond(enqueuePerSecond(bullmq)), target: "" },
      { benchmark: throughputBenchmark, metric: "enqueue/s, Keel / BullMQ", value: ratio(enqueueRatio), target: "" },
      ...(burst === undefined ? [] : [
        { benchmark: throughputBenchmark, metric: `short burst of ${burstJobs}: jobs/s, Keel`, value: perSecond(burst.jobsPerSecond(keel)), target: "" },
        { benchmark: throughputBenchmark, metric: `short burst of ${burstJobs}: jobs/s, BullMQ`, value: perSecond(burst.jobsPerSecond(bullmq)), target: "" },
        { benchmark: throughputBenchmark, metric: `short burst of ${burstJobs}: jobs/s, Keel / BullMQ`, value: ratio(burst.ratio), target: "" }
      ]),
      {
        benchmark: takeoverBenchmark,
        metric: `Keel, lease ${ms(takeoverLeaseMs)}, worst of ${rounds}`,
        value: describeTime(keel, keelWorst),
        target: `≤ ${ms(takeoverTargetMs)}`,
        met: keelWorst <= takeoverTargetMs
      },
      { benchmark: takeoverBenchmark, metric: `Keel, lease ${ms(takeoverLeaseMs)}, median`, value: describeTime(keel, keelMedian), target: "" },
      {
        benchmark: takeoverBenchmark,
        metric: `BullMQ defaults, median of ${bullmqTakeoverRounds}`,
        value: describeTime(bullmq, bullmqMedian),
        target: ""
      },
      { benchmark: takeoverBenchmark, metric: "Keel / BullMQ", value: `${capped(bullmq) ? "≤ " : ""}${ratio(takeoverRatio)}`, target: "" }
    ]
  } finally {
    if (redis !== undefined) {
      redis.admin.disconnect()
      const exit = await stopServer("redis-server", redis.child)
      console.log(`redis-server: ${describeExit(exit)}`)
    }
    await rm(directory, { recursive: true, force: true })
    redisDirectory = undefined
  }
}

await finish("job queue", await measure())
