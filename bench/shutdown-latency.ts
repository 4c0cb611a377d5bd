/**
 * Shutdown latency of real processes under `runMain`: how long after SIGTERM a service is gone, which is what
 * an orchestrator sees (Kubernetes kills it outright once its grace period is over).
 *
 *   (a) an idle service (fixtures/idle-service.ts): nothing to drain, so kill → exit should be under 300 ms;
 *   (b) a service whose WorkerPool has one job of d ms in flight (fixtures/one-job-service.ts), for d = 500
 *       and 1000: the drain must wait for the job and nothing more, so kill → exit should be within d + 100 ms.
 *       The kill is sent as soon as the job reports it started, so the job has a little less than d ms left;
 *       job start → exit is printed too, to show what is left of the margin.
 *
 * Each fixture runs as `node --import tsx <fixture>` (no tsx CLI, no npm in between), so the signal and the
 * exit code are the service's own. Each case runs BENCH_SHUTDOWN_RUNS times (default 5); median and max are
 * reported with the exit codes (all expected to be 0: a clean drain). The target is judged on the max.
 */
import { benchPath, finish, max, median, ms, section, spawnTs, verdict } from "./lib.js"
import type { Row } from "./lib.js"

const runs = Number(process.env["BENCH_SHUTDOWN_RUNS"] ?? 5)
/** Generous limits, so that a service that hangs fails the run instead of the whole benchmark. */
const readyTimeoutMs = 30_000
const exitTimeoutMs = 10_000

interface Trial {
  readonly killToExitMs: number
  /** From the `ready <epoch ms>` the fixture printed to the exit, on the wall clock both processes share. */
  readonly readyToExitMs: number
  /** From that ready line to the kill: how much of the job had already run. */
  readonly readyToKillMs: number
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** Starts the fixture, sends SIGTERM as soon as it prints its ready line, and times the way to its exit. */
const trial = (fixture: string, args: ReadonlyArray<string>): Promise<Trial> =>
  new Promise((resolve, reject) => {
    const child = spawnTs(benchPath(fixture), { args, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    let readyAt: number | undefined
    let killedAt: { readonly wall: number; readonly precise: number } | undefined
    const fail = (message: string) => {
      child.kill("SIGKILL")
      reject(new Error(`${fixture} ${args.join(" ")}: ${message}\n--- its output ---\n${output}`))
    }
    let timer = setTimeout(() => fail(`no ready line within ${readyTimeoutMs} ms`), readyTimeoutMs)
    child.stderr!.on("data", (chunk) => void (output += chunk))
    child.stdout!.on("data", (chunk) => {
      output += chunk
      const ready = /^ready (\d+)$/m.exec(output)
      if (ready === null || readyAt !== undefined) return
      readyAt = Number(ready[1])
      killedAt = { wall: Date.now(), precise: performance.now() }
      child.kill("SIGTERM")
      clearTimeout(timer)
      timer = setTimeout(() => fail(`still running ${exitTimeoutMs} ms after SIGTERM`), exitTimeoutMs)
    })
    child.on("error", reject)
    child.on("exit", (code, signal) => {
      const exitedAt = { wall: Date.now(), precise: performance.now() }
      clearTimeout(timer)
      if (readyAt === undefined || killedAt === undefined) return fail(`exited (code ${code}) before its ready line`)
      if (code !== 0) process.stdout.write(`unexpected exit code ${code} (signal ${signal}); its output:\n${output}\n`)
      resolve({
        killToExitMs: exitedAt.precise - killedAt.precise,
        readyToExitMs: exitedAt.wall - readyAt,
        readyToKillMs: killedAt.wall - readyAt,
        code,
        signal
      })
    })
  })

interface Case {
  readonly name: string
  readonly fixture: string
  readonly args: ReadonlyArray<string>
  readonly targetMs: number
  /** Whether the target itself is allowed ("within d + 100 ms") or not ("under 300 ms"). */
  readonly inclusive: boolean
  /** What the ready line marks, in the printed figures. */
  readonly readyMeans: string
}

const cases: ReadonlyArray<Case> = [
  { name: "idle", fixture: "fixtures/idle-service.ts", args: [], targetMs: 300, inclusive: false, readyMeans: "ready" },
  ...[500, 1000].map((jobMs) => ({
    name: `one job of ${jobMs} ms`,
    fixture: "fixtures/one-job-service.ts",
    args: [String(jobMs)],
    targetMs: jobMs + 100,
    inclusive: true,
    readyMeans: "job start"
  }))
]

const rows: Array<Row> = []
for (const { name, fixture, args, targetMs, inclusive, readyMeans } of cases) {
  section(`shutdown latency: ${name}, ${runs} runs`)
  const trials: Array<Trial> = []
  for (let run = 1; run <= runs; run++) {
    const result = await trial(fixture, args)
    trials.push(result)
    console.log(
      `run ${run}: kill → exit ${ms(result.killToExitMs)}, ${readyMeans} → exit ${ms(result.readyToExitMs)} ` +
        `(${readyMeans} → kill ${ms(result.readyToKillMs)}), exit code ${result.code}` +
        (result.signal === null ? "" : `, signal ${result.signal}`)
    )
  }
  const killToExit = trials.map((result) => result.killToExitMs)
  const readyToExit = trials.map((result) => result.readyToExitMs)
  const codes = trials.map((result) => result.code)
  const worst = max(killToExit)
  const met = inclusive ? worst <= targetMs : worst < targetMs
  const target = `${inclusive ? "≤" : "<"} ${targetMs} ms`
  console.log(
    `kill → exit: median ${ms(median(killToExit))}, max ${ms(max(killToExit))} (target ${target}: ${verdict(met)}); ` +
      `${readyMeans} → exit: median ${ms(median(readyToExit))}, max ${ms(max(readyToExit))}; exit codes ${codes.join(", ")}`
  )
  rows.push(
    {
      benchmark: `shutdown, ${name}`,
      metric: "kill → exit, median / max",
      value: `${ms(median(killToExit))} / ${ms(max(killToExit))}`,
      target,
      met
    },
    ...(readyMeans === "ready" ? [] : [{
      benchmark: `shutdown, ${name}`,
      metric: `${readyMeans} → exit, median / max`,
      value: `${ms(median(readyToExit))} / ${ms(max(readyToExit))}`,
      target: ""
    }]),
    {
      benchmark: `shutdown, ${name}`,
      metric: "exit codes",
      value: codes.join(" "),
      target: "all 0",
      met: codes.every((code) => code === 0)
    }
  )
}
await finish("shutdown latency", rows)
