/**
 * HTTP throughput of real server processes on 127.0.0.1, each started as `node --import tsx <file>` on a free
 * port (port 0, read back from what it prints); this process only generates the load.
 *
 *   (a) `GET /healthz` on the job server (examples/job-server/main.ts), through its whole middleware stack
 *       (request metrics, per-client rate limit, load shedding, concurrency limit, timeout); RATE_LIMIT is set
 *       so high that no run reaches it;
 *   (b) the baseline: a bare `node:http` server answering `ok` (fixtures/raw-http.ts);
 *   (c) a minimal @effect/platform app, `HttpRouter` + `HttpServer.serve` on `NodeHttpServer.layer`
 *       (fixtures/platform-http.ts): what the platform itself costs.
 *   (d) accepted `POST /jobs` per second, no-op jobs, on a second job server whose queue and store are large
 *       enough never to fill: only a 202 counts as accepted, every other status (a 503 QueueFull among them)
 *       and every connection error is counted apart.
 *
 * (a)-(c) are loaded by `wrk -t1 -c50 --latency` (requests/s, p50 and p99); (d) by autocannon, in this process,
 * which counts responses by status. After a 1 s warm-up of each, the loads alternate for BENCH_HTTP_ROUNDS
 * rounds (default 3) of BENCH_HTTP_SECONDS each (default 5); medians are reported.
 * Target: job server ≥ 0.5× raw node:http on `GET /healthz`; platform / raw is printed for scale.
 *
 * BENCH_HTTP_PROFILE=1 adds (not part of `npm run bench`) one run of the job server under `node --cpu-prof`
 * with the `GET /healthz` load, stopped by SIGTERM so that it writes its profile, then prints the 25 functions
 * with the most self time during the load; BENCH_HTTP_PROFILE=only runs the profile alone.
 *
 * Every server is stopped at the end with SIGTERM, then SIGKILL 10 s later if it is still there; how each one
 * exited, and how long after the SIGTERM, is printed. The job servers run with DRAIN_TIMEOUT=5s, which bounds
 * their drain below that grace.
 */
import autocannon from "autocannon"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises"
import { SourceMap } from "node:module"
import type { SourceMapPayload } from "node:module"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { benchPath, describeExit, finish, median, perSecond, ratio, section, spawnTs, stopServer, verdict } from "./lib.js"
import type { Row } from "./lib.js"

const seconds = Number(process.env["BENCH_HTTP_SECONDS"] ?? 5)
const rounds = Number(process.env["BENCH_HTTP_ROUNDS"] ?? 3)
const profileMode = process.env["BENCH_HTTP_PROFILE"]
const connections = 50
const warmUpSeconds = 1
const targetRatio = 0.5
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
  env: {
    PORT: "0",
    HOST: "127.0.0.1",
    RATE_LIMIT: "100000000",
    DRAIN_TIMEOUT: "5 seconds",
    QUEUE_CAPACITY: "100000",
    STORE_CAPACITY: "1000000",
    WORKERS: "4"
  },
  portLine: listeningLine
}

// ---------------------------------------------------------------------------------------------------------------
// Loads

interface WrkResult {
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** Non-2xx/3xx responses plus socket errors (connect, read, write, timeout). */
  readonly failed: number
}

const toMs = (value: string, unit: string): number =>
  Number(value) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit]!

/** `wrk -t1 -c50 -d<s>s --latency <url>`, parsed; killed if it overstays its duration by 30 s. */
const runWrk = (url: string, durationSeconds: number): Promise<WrkResult> =>
  new Promise((resolve, reject) => {
    const args = ["-t1", `-c${connections}`, `-d${durationSeconds}s`, "--latency", url]
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
      const p50 = /^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(output)
      const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(output)
      if (code !== 0 || rate === null || p50 === null || p99 === null) {
        return reject(new Error(`wrk ${args.join(" ")} exited with code ${code}:\n${output}`))
      }
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(output)?.[1] ?? 0)
      const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
      const socketErrors = socket === null ? 0 : socket.slice(1).reduce((sum, count) => sum + Number(count), 0)
      resolve({
        requestsPerSecond: Number(rate[1]),
        p50Ms: toMs(p50[1]!, p50[2]!),
        p99Ms: toMs(p99[1]!, p99[2]!),
        failed: non2xx + socketErrors
      })
    })
  })

interface PostResult {
  readonly acceptedPerSecond: number
  readonly p99Ms: number
  /** Responses other than 202, by status. */
  readonly others: ReadonlyMap<string, number>
  readonly errors: number
}

const jobBody = JSON.stringify({ kind: "noop", payload: {} })

/** autocannon's `POST /jobs` with a no-op job for `durationSeconds`, responses counted by status. */
const runPost = async (base: string, durationSeconds: number): Promise<PostResult> => {
  const result = await autocannon({
    url: `${base}/jobs`,
    method: "POST",
    body: jobBody,
    headers: { "content-type": "application/json" },
    connections,
    duration: durationSeconds,
    timeout: 10
  })
  const others = new Map<string, number>()
  let accepted = 0
  for (const [status, { count = 0 }] of Object.entries(result.statusCodeStats ?? {})) {
    if (status === "202") accepted += count
    else if (count > 0) others.set(status, count)
  }
  return { acceptedPerSecond: accepted / result.duration, p99Ms: result.latency.p99, others, errors: result.errors }
}

const describeOthers = (others: ReadonlyMap<string, number>, errors: number): string => {
  const parts = [...others].map(([status, count]) => `${count} × ${status}`)
  if (errors > 0) parts.push(`${errors} connection errors`)
  return parts.length === 0 ? "none" : parts.join(", ")
}

// ---------------------------------------------------------------------------------------------------------------
// The measurement

const measure = async (): Promise<ReadonlyArray<Row>> => {
  section(
    `http: GET /healthz (wrk -t1 -c${connections}) and POST /jobs (autocannon, ${connections} connections), ` +
      `${rounds} rounds of ${seconds} s after a ${warmUpSeconds} s warm-up`
  )
  const servers: Array<Server> = []
  try {
    for (const spec of [raw, platform, jobServer, jobIntake]) servers.push(await startServer(spec))
    const [rawServer, platformServer, jobServerProcess, intakeServer] = servers as [Server, Server, Server, Server]
    const getters = [rawServer, platformServer, jobServerProcess]

    for (const server of getters) {
      const warm = await runWrk(`${server.base}/healthz`, warmUpSeconds)
      console.log(`warm-up ${server.name}: ${perSecond(warm.requestsPerSecond)}`)
    }
    const warmPost = await runPost(intakeServer.base, warmUpSeconds)
    console.log(`warm-up POST /jobs: ${perSecond(warmPost.acceptedPerSecond)} accepted`)

    const gets = new Map(getters.map((server) => [server.name, [] as Array<WrkResult>]))
    const posts: Array<PostResult> = []
    for (let round = 1; round <= rounds; round++) {
      const line: Array<string> = []
      for (const server of getters) {
        const result = await runWrk(`${server.base}/healthz`, seconds)
        gets.get(server.name)!.push(result)
        line.push(
          `${server.name} ${perSecond(result.requestsPerSecond)} (p50 ${latency(result.p50Ms)}, p99 ${latency(result.p99Ms)}` +
            (result.failed > 0 ? `, ${result.failed} failed` : "") + ")"
        )
      }
      const post = await runPost(intakeServer.base, seconds)
      posts.push(post)
      line.push(
        `POST /jobs ${perSecond(post.acceptedPerSecond)} accepted (p99 ${latency(post.p99Ms)}, ` +
          `not accepted: ${describeOthers(post.others, post.errors)})`
      )
      console.log(`round ${round}: ${line.join(", ")}`)
    }

    const medianOf = (server: Server, pick: (result: WrkResult) => number) => median(gets.get(server.name)!.map(pick))
    const rate = (server: Server) => medianOf(server, (result) => result.requestsPerSecond)
    const p99 = (server: Server) => medianOf(server, (result) => result.p99Ms)
    const failed = getters.reduce(
      (sum, server) => sum + gets.get(server.name)!.reduce((total, result) => total + result.failed, 0),
      0
    )
    const jobOverRaw = rate(jobServerProcess) / rate(rawServer)
    const platformOverRaw = rate(platformServer) / rate(rawServer)
    const postOthers = new Map<string, number>()
    for (const post of posts) for (const [status, count] of post.others) postOthers.set(status, (postOthers.get(status) ?? 0) + count)
    const postErrors = posts.reduce((sum, post) => sum + post.errors, 0)
    const notAccepted = [...postOthers.values()].reduce((sum, count) => sum + count, postErrors)
    const acceptedRate = median(posts.map((post) => post.acceptedPerSecond))
    const postP99 = median(posts.map((post) => post.p99Ms))

    console.log(
      `GET /healthz, medians: ` +
        getters.map((server) => `${server.name} ${perSecond(rate(server))} (p99 ${latency(p99(server))})`).join(", ") +
        (failed > 0 ? `; ${failed} non-2xx responses or socket errors in all` : "")
    )
    console.log(
      `job server / raw: ${ratio(jobOverRaw)} (target ≥ ${targetRatio}×: ${verdict(jobOverRaw >= targetRatio)}); ` +
        `platform / raw: ${ratio(platformOverRaw)}`
    )
    console.log(
      `POST /jobs, medians: ${perSecond(acceptedRate)} accepted (202), p99 ${latency(postP99)}; ` +
        `not accepted in all rounds: ${describeOthers(postOthers, postErrors)}`
    )

    const get = "http, GET /healthz"
    const post = "http, POST /jobs"
    return [
      ...getters.map((server) => ({ benchmark: get, metric: `${server.name}, median`, value: perSecond(rate(server)), target: "" })),
      { benchmark: get, metric: "job server / raw", value: ratio(jobOverRaw), target: `≥ ${targetRatio}×`, met: jobOverRaw >= targetRatio },
      { benchmark: get, metric: "platform / raw", value: ratio(platformOverRaw), target: "" },
      {
        benchmark: get,
        metric: "p99 raw / platform / job server",
        value: getters.map((server) => latency(p99(server))).join(" / "),
        target: ""
      },
      { benchmark: get, metric: "non-2xx + socket errors", value: String(failed), target: "0", met: failed === 0 },
      { benchmark: post, metric: "accepted (202), median", value: perSecond(acceptedRate), target: "" },
      { benchmark: post, metric: "p99, median", value: latency(postP99), target: "" },
      { benchmark: post, metric: "not accepted, total", value: String(notAccepted), target: "0", met: notAccepted === 0 }
    ]
  } finally {
    const exits = await Promise.all(servers.map((server) => stopServer(server.name, server.child)))
    console.log(`exits: ${exits.map((exit, index) => `${servers[index]!.name} ${describeExit(exit)}`).join(", ")}`)
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
  section(`http profile: job server under node --cpu-prof, GET /healthz (wrk -t1 -c${connections}) for ${seconds} s`)
  const directory = await mkdtemp(join(tmpdir(), "keel-http-profile-"))
  try {
    const mapsFile = join(directory, "source-maps.json")
    const server = await startServer(
      { ...jobServer, env: { ...jobServer.env, KEEL_BENCH_SOURCE_MAPS: mapsFile } },
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
      const load = await runWrk(`${server.base}/healthz`, seconds)
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
