/**
 * HTTP throughput of real server processes on 127.0.0.1, each started as `node --import tsx <file>` on a free
 * port (port 0, read back from what it prints); this process only generates the load, with `wrk -t1 -c50
 * --latency` for every server and route (a Lua script makes its requests `POST /jobs` with a no-op job).
 *
 *   GET /healthz: the job server (examples/job-server/main.ts) through its whole middleware stack (request
 *     metrics, per-client rate limit, load shedding, concurrency limit, timeout; RATE_LIMIT set so high that no
 *     run reaches it), beside a bare `node:http` server (fixtures/raw-http.ts), a minimal @effect/platform app
 *     (fixtures/platform-http.ts: what the platform itself costs) and Fastify (fixtures/fastify-jobs.ts).
 *   POST /jobs, embedded: accepted jobs per second on a job server whose queue and store never fill, beside
 *     what a user would write instead, Fastify + p-queue with the same routes and semantics
 *     (fixtures/fastify-jobs.ts: schema-validated body, a record in a bounded Map, a p-queue of the same
 *     concurrency running the job and updating its record, 202 with Location).
 *   POST /jobs, traced: the same job server with tracing on (OTEL_EXPORTER_OTLP_ENDPOINT, every request sampled),
 *     its spans exported over OTLP/HTTP to a sink process (fixtures/otlp-sink.ts): what tracing costs.
 *   POST /jobs, Redis: the job server with JOB_QUEUE=redis beside Fastify + BullMQ's `Queue.add`
 *     (fixtures/fastify-bullmq.ts, with a BullMQ Worker of the same concurrency), on one redis-server.
 *
 * Only a 2xx counts as accepted; every other status (a 503 QueueFull among them) and every socket error is
 * counted apart. After a 1 s warm-up of each, the loads alternate for BENCH_HTTP_ROUNDS rounds (default 3) of
 * BENCH_HTTP_SECONDS each (default 5); medians are reported with the ratios Keel / the alternative.
 * Targets: GET /healthz ≥ 0.5× raw node:http and ≥ 1.0× Fastify; POST /jobs ≥ 0.6× Fastify + p-queue with a p99
 * at most 3× its p99; on Redis ≥ 1.0× Fastify + BullMQ.
 *
 * BENCH_HTTP_PROFILE=1 adds (not part of `npm run bench`) one run of the job server under `node --cpu-prof`
 * with the `GET /healthz` load (BENCH_HTTP_PROFILE_ROUTE=post: the embedded `POST /jobs` load), stopped by
 * SIGTERM so that it writes its profile, then prints the 25 functions with the most self time during the load;
 * BENCH_HTTP_PROFILE=only runs the profile alone.
 *
 * Every server is stopped at the end with SIGTERM, then SIGKILL 10 s later if it is still there; how each one
 * exited, and how long after the SIGTERM, is printed. The job servers run with DRAIN_TIMEOUT=5s, which bounds
 * their drain below that grace.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { SourceMap } from "node:module"
import type { SourceMapPayload } from "node:module"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { benchPath, describeExit, finish, median, perSecond, ratio, section, spawnTs, stopServer, verdict } from "./lib.js"
import type { Row } from "./lib.js"
import { type RedisServer, startRedisServer } from "./redis.js"

const seconds = Number(process.env["BENCH_HTTP_SECONDS"] ?? 5)
const rounds = Number(process.env["BENCH_HTTP_ROUNDS"] ?? 3)
const profileMode = process.env["BENCH_HTTP_PROFILE"]
const connections = 50
const warmUpSeconds = 1
const targetRatio = 0.5
const targets = { healthzOverFastify: 1.0, postOverFastify: 0.6, postP99OverFastify: 3, redisPostOverBullmq: 1.0 }
const readyTimeoutMs = 30_000
const projectRoot = benchPath("..")

/** A latency with 2 significant digits: 0.87 ms, 3.1 ms, 44 ms, 1200 ms. */
const latency = (milliseconds: number): string => `${Number(milliseconds.toPrecision(2))} ms`

// ---------------------------------------------------------------------------------------------------------------
// Server processes

interface Server {
  readonly name: string
  readonly child: ChildProcess
  readonly base: string
  /** The tail of what it printed so far, for error messages. */
  readonly output: () => string
}

interface ServerSpec {
  readonly name: string
  /** Relative to the project root. */
  readonly file: string
  readonly env?: Readonly<Record<string, string>>
  /** Its first capture group is the port the server printed. */
  readonly portLine: RegExp
}

/** Every server started and not yet seen exiting, killed outright if this process exits first. */
const running = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL")
})

const startServer = (spec: ServerSpec, nodeFlags: ReadonlyArray<string> = []): Promise<Server> =>
  new Promise((resolve, reject) => {
    const child = spawnTs(join(projectRoot, spec.file), { env: spec.env ?? {}, nodeFlags, stdio: ["ignore", "pipe", "pipe"] })
    running.add(child)
    child.once("exit", () => running.delete(child))
    let output = ""
    let ready = false
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-20_000)
      const port = ready ? null : spec.portLine.exec(output)
      if (port === null) return
      ready = true
      clearTimeout(timer)
      resolve({ name: spec.name, child, base: `http://127.0.0.1:${port[1]}`, output: () => output })
    }
    const fail = (message: string) => {
      child.kill("SIGKILL")
      reject(new Error(`${spec.name} (${spec.file}): ${message}\n--- its output ---\n${output}`))
    }
    const timer = setTimeout(() => fail(`no port printed within ${readyTimeoutMs} ms`), readyTimeoutMs)
    child.stdout!.on("data", keep)
    child.stderr!.on("data", keep)
    child.on("error", (error) => fail(error.message))
    child.on("exit", (code, signal) => {
      if (!ready) fail(`exited (code ${code}, signal ${signal}) before printing its port`)
    })
  })

const listeningLine = /listening on http:\/\/[^\s:]+:(\d+)/
const portLine = /^port (\d+)$/m

const raw: ServerSpec = { name: "raw node:http", file: "bench/fixtures/raw-http.ts", portLine }
/** Queues and stores that never fill in a round, and the same 4 workers, for every job server and its alternative. */
const roomy = { QUEUE_CAPACITY: "1000000", STORE_CAPACITY: "10000000", WORKERS: "4" }
const fastify: ServerSpec = { name: "Fastify + p-queue", file: "bench/fixtures/fastify-jobs.ts", env: roomy, portLine }
const platform: ServerSpec = { name: "platform HttpRouter", file: "bench/fixtures/platform-http.ts", portLine }
/**
 * The listening line is logged at Info, so LOG_LEVEL stays at its default; the server logs nothing per request.
 * DRAIN_TIMEOUT bounds its shutdown well within the 10 s before SIGKILL: the profile is only written on a clean exit.
 */
const jobServer: ServerSpec = {
  name: "job server",
  file: "examples/job-server/main.ts",
  env: { PORT: "0", HOST: "127.0.0.1", RATE_LIMIT: "100000000", DRAIN_TIMEOUT: "5 seconds" },
  portLine: listeningLine
}
const jobIntake: ServerSpec = {
  name: "job server (POST /jobs)",
  file: "examples/job-server/main.ts",
  env: { PORT: "0", HOST: "127.0.0.1", RATE_LIMIT: "100000000", DRAIN_TIMEOUT: "5 seconds", ...roomy },
  portLine: listeningLine
}
const jobIntakeOnRedis = (redisUrl: string): ServerSpec => ({
  name: "job server on Redis",
  file: "examples/job-server/main.ts",
  env: { ...jobIntake.env, JOB_QUEUE: "redis", REDIS_URL: redisUrl, QUEUE_NAME: "bench-keel" },
  portLine: listeningLine
})
const otlpSink: ServerSpec = { name: "OTLP sink", file: "bench/fixtures/otlp-sink.ts", portLine }
/** The embedded job server with tracing on, every request sampled, its spans exported to `sink`. */
const jobIntakeTraced = (sink: string): ServerSpec => ({
  name: "job server traced",
  file: "examples/job-server/main.ts",
  env: { ...jobIntake.env, OTEL_EXPORTER_OTLP_ENDPOINT: sink, OTEL_TRACES_SAMPLER: "always_on", OTEL_SERVICE_NAME: "bench" },
  portLine: listeningLine
})
const fastifyOnBullmq = (redisUrl: string): ServerSpec => ({
  name: "Fastify + BullMQ",
  file: "bench/fixtures/fastify-bullmq.ts",
  env: { REDIS_URL: redisUrl, QUEUE_NAME: "bench-bullmq", WORKERS: "4" },
  portLine
})

// ---------------------------------------------------------------------------------------------------------------
// Loads

interface WrkResult {
  readonly requestsPerSecond: number
  /** Answered 2xx/3xx per second: requests less the failed ones, over the run's duration. */
  readonly okPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** Non-2xx/3xx responses plus socket errors (connect, read, write, timeout). */
  readonly failed: number
}

const toMs = (value: string, unit: string): number =>
  Number(value) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit]!

/** wrk's script for `POST /jobs` with a no-op job, written once to a temporary file. */
const postScript = `wrk.method = "POST"
wrk.body = '{"kind":"noop","payload":{}}'
wrk.headers["Content-Type"] = "application/json"
`

/** `wrk -t1 -c50 -d<s>s --latency [-s script] <url>`, parsed; killed if it overstays its duration by 30 s. */
const runWrk = (url: string, durationSeconds: number, script?: string): Promise<WrkResult> =>
  new Promise((resolve, reject) => {
    const args = ["-t1", `-c${connections}`, `-d${durationSeconds}s`, "--latency", ...(script === undefined ? [] : ["-s", script]), url]
    const child = spawn("wrk", args, { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk) => void (output += chunk))
    child.stderr.on("data", (chunk) => void (output += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), (durationSeconds + 30) * 1000)
    child.on("error", (error) => {
      clearTimeout(timer)
      reject(new Error(`wrk: ${error.message}`))
    })
    child.on("close", (code) => {
      clearTimeout(timer)
      const rate = /Requests\/sec:\s+([\d.]+)/.exec(output)
      const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(output)
      const p50 = /^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(output)
      const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(output)
      if (code !== 0 || rate === null || total === null || p50 === null || p99 === null) {
        return reject(new Error(`wrk ${args.join(" ")} exited with code ${code}:\n${output}`))
      }
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(output)?.[1] ?? 0)
      const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
      const socketErrors = socket === null ? 0 : socket.slice(1).reduce((sum, count) => sum + Number(count), 0)
      const requests = Number(total[1])
      const durationMs = toMs(total[2]!, total[3]!)
      resolve({
        requestsPerSecond: Number(rate[1]),
        okPerSecond: (Math.max(0, requests - non2xx) / durationMs) * 1000,
        p50Ms: toMs(p50[1]!, p50[2]!),
        p99Ms: toMs(p99[1]!, p99[2]!),
        failed: non2xx + socketErrors
      })
    })
  })

// ---------------------------------------------------------------------------------------------------------------
// The measurement

/** One load (a route on a server) measured in every round. */
interface Load {
  readonly server: Server
  readonly path: string
  readonly script?: string
  readonly results: Array<WrkResult>
}

/** A summary row judged against its target: `value` meets it when `met`. */
const judged = (benchmark: string, metric: string, value: string, target: string, met: boolean): Row =>
  ({ benchmark, metric, value, target, met })

/** Writes wrk's `POST /jobs` script into `directory`; returns its path. */
const writePostScript = async (directory: string) => {
  const script = join(directory, "post-jobs.lua")
  await writeFile(script, postScript)
  return script
}

const describeResult = (result: WrkResult) =>
  `${perSecond(result.okPerSecond)} (p50 ${latency(result.p50Ms)}, p99 ${latency(result.p99Ms)}` +
  (result.failed > 0 ? `, ${result.failed} failed` : "") + ")"

const measure = async (): Promise<ReadonlyArray<Row>> => {
  section(
    `http: GET /healthz and POST /jobs (wrk -t1 -c${connections}), ${rounds} rounds of ${seconds} s after a ` +
      `${warmUpSeconds} s warm-up`
  )
  const directory = await mkdtemp(join(tmpdir(), "keel-http-bench-"))
  const servers: Array<Server> = []
  let redis: RedisServer | undefined
  try {
    const script = await writePostScript(directory)
    redis = await startRedisServer(directory, (child) => {
      running.add(child)
      child.once("exit", () => running.delete(child))
    })
    const sink = await startServer(otlpSink)
    servers.push(sink)
    const specs = [
      raw,
      platform,
      fastify,
      jobServer,
      jobIntake,
      fastifyOnBullmq(redis.url),
      jobIntakeOnRedis(redis.url),
      jobIntakeTraced(sink.base)
    ]
    for (const spec of specs) servers.push(await startServer(spec))
    const [, rawServer, platformServer, fastifyServer, jobServerProcess, intakeServer, bullmqServer, redisIntakeServer, tracedServer] =
      servers as [Server, Server, Server, Server, Server, Server, Server, Server, Server]
    const load = (server: Server, path: string, post = false): Load =>
      post ? { server, path, script, results: [] } : { server, path, results: [] }
    const health = [rawServer, platformServer, fastifyServer, jobServerProcess].map((server) => load(server, "/healthz"))
    const posts = [load(fastifyServer, "/jobs", true), load(intakeServer, "/jobs", true), load(tracedServer, "/jobs", true)]
    const redisPosts = [load(bullmqServer, "/jobs", true), load(redisIntakeServer, "/jobs", true)]
    const loads = [...health, ...posts, ...redisPosts]
    const label = (entry: Load) => `${entry.script === undefined ? "GET" : "POST"} ${entry.path} ${entry.server.name}`

    for (const entry of loads) {
      const warm = await runWrk(`${entry.server.base}${entry.path}`, warmUpSeconds, entry.script)
      console.log(`warm-up ${label(entry)}: ${perSecond(warm.okPerSecond)}`)
    }
    for (let round = 1; round <= rounds; round++) {
      const line: Array<string> = []
      for (const entry of loads) {
        const result = await runWrk(`${entry.server.base}${entry.path}`, seconds, entry.script)
        entry.results.push(result)
        line.push(`${label(entry)} ${describeResult(result)}`)
      }
      console.log(`round ${round}:\n  ${line.join("\n  ")}`)
    }

    const rate = (entry: Load) => median(entry.results.map((result) => result.okPerSecond))
    const p99 = (entry: Load) => median(entry.results.map((result) => result.p99Ms))
    const failedIn = (entries: ReadonlyArray<Load>) =>
      entries.reduce((sum, entry) => sum + entry.results.reduce((total, result) => total + result.failed, 0), 0)
    const [rawLoad, platformLoad, fastifyLoad, jobLoad] = health as [Load, Load, Load, Load]
    const [fastifyPost, keelPost, tracedPost] = posts as [Load, Load, Load]
    const [bullmqPost, keelRedisPost] = redisPosts as [Load, Load]
    const jobOverRaw = rate(jobLoad) / rate(rawLoad)
    const jobOverFastify = rate(jobLoad) / rate(fastifyLoad)
    const platformOverRaw = rate(platformLoad) / rate(rawLoad)
    const postOverFastify = rate(keelPost) / rate(fastifyPost)
    const postP99OverFastify = p99(keelPost) / p99(fastifyPost)
    const redisPostOverBullmq = rate(keelRedisPost) / rate(bullmqPost)
    const tracedOverUntraced = rate(tracedPost) / rate(keelPost)
    const medians = (entries: ReadonlyArray<Load>) =>
      entries.map((entry) => `${entry.server.name} ${perSecond(rate(entry))} (p99 ${latency(p99(entry))})`).join(", ")

    console.log(`GET /healthz, medians: ${medians(health)}`)
    console.log(
      `job server / raw: ${ratio(jobOverRaw)} (target ≥ ${targetRatio}×: ${verdict(jobOverRaw >= targetRatio)}); ` +
        `job server / Fastify: ${ratio(jobOverFastify)} (target ≥ ${targets.healthzOverFastify}×: ` +
        `${verdict(jobOverFastify >= targets.healthzOverFastify)}); platform / raw: ${ratio(platformOverRaw)}`
    )
    console.log(`POST /jobs accepted, medians: ${medians(posts)}; job server / Fastify + p-queue: ${ratio(postOverFastify)}`)
    console.log(`POST /jobs on Redis accepted, medians: ${medians(redisPosts)}; job server / Fastify + BullMQ: ${ratio(redisPostOverBullmq)}`)
    console.log(`POST /jobs with tracing on (every request sampled, exported over OTLP/HTTP) / off: ${ratio(tracedOverUntraced)}`)

    const get = "http, GET /healthz"
    const post = "http, POST /jobs"
    const onRedis = "http, POST /jobs, Redis"
    const healthFailed = failedIn(health)
    const postFailed = failedIn([...posts, ...redisPosts])
    return [
      ...health.map((entry) => ({ benchmark: get, metric: `${entry.server.name}, median`, value: perSecond(rate(entry)), target: "" })),
      { benchmark: get, metric: "job server / raw", value: ratio(jobOverRaw), target: `≥ ${targetRatio}×`, met: jobOverRaw >= targetRatio },
      judged(get, "job server / Fastify", ratio(jobOverFastify), `≥ ${targets.healthzOverFastify}×`, jobOverFastify >= targets.healthzOverFastify),
      { benchmark: get, metric: "platform / raw", value: ratio(platformOverRaw), target: "" },
      { benchmark: get, metric: "p99 raw / platform / Fastify / job server", value: health.map((entry) => latency(p99(entry))).join(" / "), target: "" },
      { benchmark: get, metric: "non-2xx + socket errors", value: String(healthFailed), target: "0", met: healthFailed === 0 },
      ...posts.map((entry) => ({ benchmark: post, metric: `${entry.server.name}, accepted, median`, value: perSecond(rate(entry)), target: "" })),
      judged(post, "job server / Fastify + p-queue", ratio(postOverFastify), `≥ ${targets.postOverFastify}×`, postOverFastify >= targets.postOverFastify),
      judged(
        post,
        "p99 job server / Fastify + p-queue",
        `${latency(p99(keelPost))} / ${latency(p99(fastifyPost))} = ${ratio(postP99OverFastify)}`,
        `≤ ${targets.postP99OverFastify}×`,
        postP99OverFastify <= targets.postP99OverFastify
      ),
      { benchmark: post, metric: "job server traced / untraced (every request sampled)", value: ratio(tracedOverUntraced), target: "" },
      ...redisPosts.map((entry) => ({ benchmark: onRedis, metric: `${entry.server.name}, accepted, median`, value: perSecond(rate(entry)), target: "" })),
      judged(onRedis, "job server / Fastify + BullMQ", ratio(redisPostOverBullmq), `≥ ${targets.redisPostOverBullmq}×`, redisPostOverBullmq >= targets.redisPostOverBullmq),
      { benchmark: post, metric: "not accepted (non-2xx + socket errors)", value: String(postFailed), target: "0", met: postFailed === 0 }
    ]
  } finally {
    const exits = await Promise.all(servers.map((server) => stopServer(server.name, server.child)))
    console.log(`exits: ${exits.map((exit, index) => `${servers[index]!.name} ${describeExit(exit)}`).join(", ")}`)
    if (redis !== undefined) {
      redis.admin.disconnect()
      await stopServer("redis-server", redis.child)
    }
    await rm(directory, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The profile

interface CpuProfile {
  readonly nodes: ReadonlyArray<{
    readonly id: number
    readonly callFrame: {
      readonly functionName: string
      readonly url: string
      readonly lineNumber: number
      readonly columnNumber: number
    }
  }>
  readonly startTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** `file:///…/node_modules/effect/dist/esm/x.js` → `effect/dist/esm/x.js`; project files relative to its root. */
const shortUrl = (url: string): string => {
  const path = url.startsWith("file://") ? decodeURIComponent(new URL(url).pathname) : url
  const modules = path.lastIndexOf("/node_modules/")
  if (modules >= 0) return path.slice(modules + "/node_modules/".length)
  return path.startsWith(projectRoot) ? path.slice(projectRoot.length).replace(/^\//, "") : path
}

/**
 * Preloaded into the profiled server (`--import data:…`, with --enable-source-maps): at exit, writes the source
 * maps of the project's .ts files it loaded to the file KEEL_BENCH_SOURCE_MAPS names. tsx's transform puts a
 * whole module on a line or two, so without them a profile can only say "somewhere in rateLimit.ts".
 */
const sourceMapDumper = `
import { findSourceMap } from "node:module"
import { readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
process.on("exit", () => {
  const maps = {}
  const walk = (directory) => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      if (entry.name === "node_modules" || entry.name.startsWith(".")) continue
      const path = join(directory, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith(".ts")) {
        const url = pathToFileURL(path).href
        const map = findSourceMap(url)
        if (map !== undefined) maps[url] = map.payload
      }
    }
  }
  walk(process.cwd())
  writeFileSync(process.env.KEEL_BENCH_SOURCE_MAPS, JSON.stringify(maps))
})
`

/** Where a profiled function is: `file:line`, mapped back to the .ts source when its source map is known. */
const locate = (
  frame: CpuProfile["nodes"][number]["callFrame"],
  maps: ReadonlyMap<string, SourceMap>
): string => {
  if (frame.url === "") return ""
  const entry = maps.get(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber)
  const line = entry !== undefined && "originalLine" in entry ? entry.originalLine : frame.lineNumber
  return `${shortUrl(frame.url)}:${line + 1}`
}

/**
 * Self time per function (name, file, line) from a .cpuprofile, counting only the samples taken between
 * `from` and `to` (microseconds on the monotonic clock V8 stamps its samples with, the one
 * `process.hrtime` reads), or all of them if none falls in that window.
 */
const selfTimes = (profile: CpuProfile, maps: ReadonlyMap<string, SourceMap>, from: number, to: number) => {
  const keys = new Map(profile.nodes.map((node) => {
    const name = node.callFrame.functionName === "" ? "(anonymous)" : node.callFrame.functionName
    const where = locate(node.callFrame, maps)
    return [node.id, where === "" ? name : `${name}  ${where}`]
  }))
  const all = new Map<string, number>()
  const windowed = new Map<string, number>()
  let at = profile.startTime
  for (let index = 0; index < profile.samples.length; index++) {
    at += profile.timeDeltas[index] ?? 0
    // A sample stands for the time until the next one.
    const duration = profile.timeDeltas[index + 1] ?? 0
    const key = keys.get(profile.samples[index]!)!
    all.set(key, (all.get(key) ?? 0) + duration)
    if (at >= from && at <= to) windowed.set(key, (windowed.get(key) ?? 0) + duration)
  }
  return windowed.size > 0 ? { times: windowed, windowed: true } : { times: all, windowed: false }
}

const monotonicMicros = () => Number(process.hrtime.bigint() / 1000n)

const profileJobServer = async (top = 25): Promise<void> => {
  const posting = process.env["BENCH_HTTP_PROFILE_ROUTE"] === "post"
  const route = posting ? "POST /jobs" : "GET /healthz"
  section(`http profile: job server under node --cpu-prof, ${route} (wrk -t1 -c${connections}) for ${seconds} s`)
  const directory = await mkdtemp(join(tmpdir(), "keel-http-profile-"))
  try {
    const mapsFile = join(directory, "source-maps.json")
    const script = await writePostScript(directory)
    const spec = posting ? jobIntake : jobServer
    const server = await startServer(
      { ...spec, env: { ...spec.env, KEEL_BENCH_SOURCE_MAPS: mapsFile } },
      [
        "--cpu-prof",
        `--cpu-prof-dir=${directory}`,
        "--enable-source-maps",
        `--import=data:text/javascript,${encodeURIComponent(sourceMapDumper)}`
      ]
    )
    let from = 0
    let to = 0
    try {
      from = monotonicMicros()
      const load = posting ? await runWrk(`${server.base}/jobs`, seconds, script) : await runWrk(`${server.base}/healthz`, seconds)
      to = monotonicMicros()
      console.log(`${perSecond(load.requestsPerSecond)}, p50 ${latency(load.p50Ms)}, p99 ${latency(load.p99Ms)} (under the profiler)`)
    } finally {
      console.log(`job server exit: ${describeExit(await stopServer(server.name, server.child))}`)
    }
    // One profile per thread (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile): the main thread is 0.
    const files = (await readdir(directory)).filter((file) => file.endsWith(".cpuprofile"))
    const main = files.find((file) => file.split(".")[4] === "0") ?? files[0]
    if (main === undefined) throw new Error(`no .cpuprofile written in ${directory}`)
    const profile = JSON.parse(await readFile(join(directory, main), "utf8")) as CpuProfile
    const payloads = await readFile(mapsFile, "utf8").then(
      (text) => Object.entries(JSON.parse(text) as Record<string, SourceMapPayload>),
      () => [] // no clean exit: positions in .ts files stay those of tsx's output
    )
    const maps = new Map(payloads.map(([url, payload]) => [url, new SourceMap(payload)]))
    const { times, windowed } = selfTimes(profile, maps, from, to)
    const total = [...times.values()].reduce((sum, time) => sum + time, 0)
    const idle = times.get("(idle)") ?? 0
    console.log(
      `${windowed ? "during the load" : "whole run (no sample fell in the load window)"}: ` +
        `${(total / 1000).toFixed(0)} ms sampled, ${((idle / total) * 100).toFixed(0)} % idle; self time:`
    )
    const sorted = [...times].filter(([key]) => key !== "(idle)").sort((a, b) => b[1] - a[1]).slice(0, top)
    for (const [key, time] of sorted) {
      console.log(`${(time / 1000).toFixed(0).padStart(6)} ms ${((time / total) * 100).toFixed(1).padStart(5)} %  ${key}`)
    }
  } finally {
    await rm(directory, { recursive: true, force: true })
  }
}

const rows = profileMode === "only" ? [] : await measure()
if (profileMode === "1" || profileMode === "only") await profileJobServer()
await finish("http", rows)
