/**
 * A real Prometheus server (Debian's `prometheus`) for a test: started on a free port of 127.0.0.1 with a
 * temporary directory for its configuration and its TSDB, scraping the targets a test gives every
 * `scrapeInterval`, and queried through its HTTP API as a dashboard queries it. Every wait is bounded;
 * `stop` ends it and removes the directory.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { terminate } from "./childProcess.js"
import { freePort } from "./redisServer.js"

/** One series of an instant query's answer: its labels and its value. */
export interface Sample {
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Prometheus {
  readonly url: string
  readonly process: ChildProcess
  /** Everything Prometheus has logged so far. */
  readonly output: () => string
  /** The samples of an instant query (`/api/v1/query`) of `expression`, now. */
  readonly query: (expression: string) => Promise<ReadonlyArray<Sample>>
  /** Stops Prometheus (SIGTERM, SIGKILL after 3 s) and removes its directory. */
  readonly stop: () => Promise<void>
}

export interface PrometheusOptions {
  /** The `host:port` addresses whose `/metrics` Prometheus scrapes. */
  readonly targets: ReadonlyArray<string>
  /** How often it scrapes them, in whole seconds. */
  readonly scrapeIntervalSeconds: number
}

/** Starts `prometheus` and resolves once its readiness endpoint answers 200; rejects after 20 s. */
export const startPrometheus = async ({ scrapeIntervalSeconds, targets }: PrometheusOptions): Promise<Prometheus> => {
  const port = await freePort()
  const directory = mkdtempSync(join(tmpdir(), "keel-prometheus-"))
  const configFile = join(directory, "prometheus.yml")
  writeFileSync(
    configFile,
    [
      "global:",
      `  scrape_interval: ${scrapeIntervalSeconds}s`,
      `  scrape_timeout: ${scrapeIntervalSeconds}s`,
      "scrape_configs:",
      "  - job_name: keel",
      "    static_configs:",
      `      - targets: [${targets.map((target) => JSON.stringify(target)).join(", ")}]`,
      ""
    ].join("\n")
  )
  const child = spawn("prometheus", [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(directory, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`
  ], { stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const url = `http://127.0.0.1:${port}`

  const stop = async () => {
    await terminate(child, exited)
    rmSync(directory, { recursive: true, force: true })
  }

  const query = async (expression: string): Promise<ReadonlyArray<Sample>> => {
    const response = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expression)}`, {
      signal: AbortSignal.timeout(2_000)
    })
    const answer = await response.json() as {
      readonly status: string
      readonly error?: string
      readonly data?: { readonly result: ReadonlyArray<{ metric: Record<string, string>; value: [number, string] }> }
    }
    if (answer.status !== "success") throw new Error(`Prometheus query ${expression} failed: ${answer.error}`)
    return answer.data!.result.map(({ metric, value }) => ({ labels: metric, value: Number(value[1]) }))
  }

  const deadline = Date.now() + 20_000
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      rmSync(directory, { recursive: true, force: true })
      throw new Error(`prometheus exited (${child.exitCode ?? child.signalCode}):\n${output}`)
    }
    const ready = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) })
      .then((response) => response.ok, () => false)
    if (ready) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`prometheus was not ready within 20 s:\n${output}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { url, process: child, output: () => output, query, stop }
}
