/**
 * mini-redis (examples/mini-redis/main.ts) against Debian's real redis-server, both real processes on
 * 127.0.0.1; this process only starts them and runs redis-benchmark.
 *
 *   (a) redis-server on a free port (listened on at port 0, then closed), persistence off (`--save ""
 *       --appendonly no`), its `--dir` a fresh temporary directory; ready once `redis-cli ping` answers PONG;
 *   (b) mini-redis as `node --import tsx examples/mini-redis/main.ts --port 0`, its port read back from the
 *       `mini-redis … listening on 127.0.0.1:<port>` line it logs.
 *
 * The load is `redis-benchmark -t set,get -n N -c 50 -q`, then the same with `-P 16` (16 commands in flight on
 * each connection), N from BENCH_REDIS_REQUESTS (default 200000); the final requests-per-second figure of each
 * test is kept. After a warm-up of each server, the servers alternate for BENCH_REDIS_ROUNDS rounds (default
 * 3); medians are reported. Targets, mini-redis / redis-server on SET and on GET: ≥ 0.5× at -P 1 and ≥ 0.25×
 * at -P 16.
 *
 * redis-server, redis-benchmark and redis-cli must be on PATH (Debian: redis-server and redis-tools); otherwise
 * the run fails naming the one that is missing. Every redis-benchmark and redis-cli run is killed if it
 * overstays its bound; both servers are stopped at the end with SIGTERM, then SIGKILL 10 s later if they are
 * still there; how each one exited, and how long after the SIGTERM, is printed.
 */
import { execFile, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import {
  benchPath,
  describeExit,
  finish,
  freePort,
  median,
  perSecond,
  ratio,
  requireProgram,
  section,
  spawnTs,
  stopServer,
  verdict
} from "./lib.js"
import type { Row } from "./lib.js"

const requests = Number(process.env["BENCH_REDIS_REQUESTS"] ?? 200_000)
const rounds = Number(process.env["BENCH_REDIS_ROUNDS"] ?? 3)
const clients = 50
const warmUpRequests = Math.min(requests, 20_000)
const host = "127.0.0.1"
/** Commands in flight per connection (`-P`), each with its target for mini-redis / redis-server. */
const pipelines = [
  { depth: 1, target: 0.5 },
  { depth: 16, target: 0.25 }
] as const
const tests = ["SET", "GET"] as const
type Test = (typeof tests)[number]
const readyTimeoutMs = 30_000
const redisReadyTimeoutMs = 10_000
const pingTimeoutMs = 1_000
/** A redis-benchmark run that takes longer than this (SET and GET under 1000 requests/s each) is killed. */
const benchmarkTimeoutMs = (count: number) => 60_000 + count * 2
const projectRoot = benchPath("..")

// ---------------------------------------------------------------------------------------------------------------
// Programs

interface Programs {
  readonly redisServer: string
  readonly redisBenchmark: string
  readonly redisCli: string
}

/** Every child started and not yet seen exiting, killed outright if this process exits first. */
const running = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL")
})


interface Ran {
  readonly code: number | null
  readonly output: string
}

/** Runs a program to its end, stdout and stderr together; killed with SIGKILL at `timeoutMs`. */
const runProgram = (file: string, args: ReadonlyArray<string>, timeoutMs: number): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const output = `${stdout}${stderr}`
        if (error === null) return resolve({ code: 0, output })
        if (typeof error.code === "number" && !error.killed) return resolve({ code: error.code, output })
        reject(new Error(`${file} ${args.join(" ")}: ${error.message}\n${output}`))
      }
    )
    running.add(child)
    child.once("exit", () => running.delete(child))
  })


// ---------------------------------------------------------------------------------------------------------------
// Server processes

interface Server {
  readonly name: string
  readonly child: ChildProcess
  readonly port: number
  /** The tail of what it printed so far, for error messages. */
  readonly output: () => string
}

/** Keeps the tail of what a server prints; `onOutput` sees all of it after each chunk. */
const watch = (child: ChildProcess, onOutput: (output: string) => void): (() => string) => {
  running.add(child)
  child.once("exit", () => running.delete(child))
  let output = ""
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000)
    onOutput(output)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  return () => output
}

const miniRedisFile = "examples/mini-redis/main.ts"
const listeningLine = /mini-redis \S+ listening on 127\.0\.0\.1:(\d+)/

const startMiniRedis = (): Promise<Server> =>
  new Promise((resolve, reject) => {
    const name = "mini-redis"
    const child = spawnTs(join(projectRoot, miniRedisFile), { args: ["--port", "0"], stdio: ["ignore", "pipe", "pipe"] })
    let ready = false
    const output = watch(child, (text) => {
      const port = ready ? null : listeningLine.exec(text)
      if (port === null) return
      ready = true
      clearTimeout(timer)
      resolve({ name, child, port: Number(port[1]), output })
    })
    const fail = (message: string) => {
      clearTimeout(timer)
      child.kill("SIGKILL")
      reject(new Error(`${name} (${miniRedisFile}): ${message}\n--- its output ---\n${output()}`))
    }
    const timer = setTimeout(() => fail(`no port printed within ${readyTimeoutMs} ms`), readyTimeoutMs)
    child.on("error", (error) => fail(error.message))
    child.on("exit", (code, signal) => {
      if (!ready) fail(`exited (code ${code}, signal ${signal}) before printing its port`)
    })
  })

/** redis-server on `port`, persistence off, files in `directory`; resolves once `redis-cli ping` answers PONG. */
const startRedisServer = async (
  programs: Programs,
  port: number,
  directory: string
): Promise<Server> => {
  const name = "redis-server"
  const args = [
    "--port", String(port),
    "--bind", host,
    "--save", "",
    "--appendonly", "no",
    "--dir", directory,
    "--daemonize", "no"
  ]
  const child = spawn(programs.redisServer, args, { stdio: ["ignore", "pipe", "pipe"] })
  const output = watch(child, () => {})
  let failure: string | undefined
  child.on("error", (error) => void (failure ??= error.message))
  child.on("exit", (code, signal) => void (failure ??= `exited (code ${code}, signal ${signal}) before answering PING`))
  const fail = (message: string) => {
    child.kill("SIGKILL")
    return new Error(`${name} ${args.join(" ")}: ${message}\n--- its output ---\n${output()}`)
  }
  const deadline = performance.now() + redisReadyTimeoutMs
  while (failure === undefined && performance.now() < deadline) {
    const ping = await runProgram(programs.redisCli, ["-h", host, "-p", String(port), "ping"], pingTimeoutMs).catch(() => null)
    if (ping?.code === 0 && ping.output.trim() === "PONG") return { name, child, port, output }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw fail(failure ?? `no PONG from redis-cli ping within ${redisReadyTimeoutMs} ms`)
}

// ---------------------------------------------------------------------------------------------------------------
// The load

type Rates = Readonly<Record<Test, number>>

/**
 * `redis-benchmark -t set,get -n <count> -c 50 -q [-P <depth>]` against `server`: requests per second of each
 * test. With -q it rewrites a progress line with carriage returns; the last figure of each test is the final one.
 */
const runBenchmark = async (programs: Programs, server: Server, count: number, depth: number): Promise<Rates> => {
  const args = [
    "-h", host,
    "-p", String(server.port),
    "-t", "set,get",
    "-n", String(count),
    "-c", String(clients),
    "-q",
    ...(depth > 1 ? ["-P", String(depth)] : [])
  ]
  const ran = await runProgram(programs.redisBenchmark, args, benchmarkTimeoutMs(count))
  const finals = new Map<string, number>()
  for (const line of ran.output.split(/[\r\n]+/)) {
    const match = /^\s*([A-Z_]+): ([\d.]+) requests per second/.exec(line)
    if (match !== null) finals.set(match[1]!, Number(match[2]))
  }
  const set = finals.get("SET")
  const get = finals.get("GET")
  if (ran.code !== 0 || set === undefined || get === undefined) {
    throw new Error(
      `redis-benchmark ${args.join(" ")} against ${server.name} exited with code ${ran.code}` +
        `${set === undefined || get === undefined ? " without a final SET and GET figure" : ""}:\n${ran.output}`
    )
  }
  return { SET: set, GET: get }
}

const describeRates = (rates: Rates): string => tests.map((test) => `${test} ${perSecond(rates[test])}`).join(", ")

// ---------------------------------------------------------------------------------------------------------------
// The measurement

const measure = async (): Promise<ReadonlyArray<Row>> => {
  const programs: Programs = {
    redisServer: requireProgram("redis-server", "redis-server"),
    redisBenchmark: requireProgram("redis-benchmark", "redis-tools"),
    redisCli: requireProgram("redis-cli", "redis-tools")
  }
  const version = await runProgram(programs.redisServer, ["--version"], 10_000)
  section(
    `mini-redis: redis-benchmark -t set,get -n ${requests} -c ${clients} -q, at -P 1 and -P 16, against ` +
      `mini-redis and redis-server ${/v=(\S+)/.exec(version.output)?.[1] ?? "(version unknown)"}, ` +
      `${rounds} rounds after a warm-up of ${warmUpRequests} requests`
  )
  const directory = await mkdtemp(join(tmpdir(), "keel-mini-redis-bench-"))
  const servers: Array<Server> = []
  try {
    servers.push(await startRedisServer(programs, await freePort(), directory))
    servers.push(await startMiniRedis())
    const [redis, mini] = servers as [Server, Server]
    console.log(`redis-server on port ${redis.port}, mini-redis on port ${mini.port}`)

    for (const server of servers) {
      const warm = await runBenchmark(programs, server, warmUpRequests, 1)
      console.log(`warm-up ${server.name}: ${describeRates(warm)}`)
    }

    const results = new Map<number, Map<string, Array<Rates>>>(
      pipelines.map(({ depth }) => [depth, new Map(servers.map((server) => [server.name, []]))])
    )
    for (let round = 1; round <= rounds; round++) {
      for (const { depth } of pipelines) {
        const line: Array<string> = []
        for (const server of servers) {
          const rates = await runBenchmark(programs, server, requests, depth)
          results.get(depth)!.get(server.name)!.push(rates)
          line.push(`${server.name} ${describeRates(rates)}`)
        }
        console.log(`round ${round}, -P ${depth}: ${line.join("; ")}`)
      }
    }

    const rate = (depth: number, server: Server, test: Test) =>
      median(results.get(depth)!.get(server.name)!.map((rates) => rates[test]))
    const rows: Array<Row> = []
    for (const { depth, target } of pipelines) {
      const medians = (server: Server): Rates => ({ SET: rate(depth, server, "SET"), GET: rate(depth, server, "GET") })
      console.log(`-P ${depth}, medians: ${servers.map((server) => `${server.name} ${describeRates(medians(server))}`).join("; ")}`)
      const ratios = tests.map((test) => ({ test, value: rate(depth, mini, test) / rate(depth, redis, test) }))
      console.log(
        `-P ${depth}, mini-redis / redis-server: ` +
          ratios.map(({ test, value }) => `${test} ${ratio(value)} (target ≥ ${target}×: ${verdict(value >= target)})`).join(", ")
      )
      const benchmark = `mini-redis, -P ${depth}`
      for (const test of tests) {
        for (const server of servers) {
          rows.push({ benchmark, metric: `${test}, ${server.name}, median`, value: perSecond(rate(depth, server, test)), target: "" })
        }
      }
      for (const { test, value } of ratios) {
        rows.push({ benchmark, metric: `${test}, mini-redis / redis-server`, value: ratio(value), target: `≥ ${target}×`, met: value >= target })
      }
    }
    return rows
  } finally {
    const exits = await Promise.all(servers.map((server) => stopServer(server.name, server.child)))
    console.log(`exits: ${exits.map((exit, index) => `${servers[index]!.name} ${describeExit(exit)}`).join(", ")}`)
    await rm(directory, { recursive: true, force: true })
  }
}

await finish("mini-redis", await measure())
