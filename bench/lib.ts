/**
 * Shared helpers for the benchmarks: statistics, formatting, spawning Node on a TypeScript file, and the
 * summary rows each benchmark hands to bench/run.ts.
 *
 * Every benchmark is a script that also runs on its own (`node --expose-gc --import tsx bench/memory.ts`) and
 * ends with `finish(rows)`: it prints its rows and, when bench/run.ts started it as a child process, sends them
 * over the IPC channel.
 * Running each benchmark in a fresh process keeps their heaps, JIT state and RSS from leaking into each other.
 */
import { spawn } from "node:child_process"
import type { ChildProcess, StdioOptions } from "node:child_process"
import { accessSync, constants } from "node:fs"
import * as Net from "node:net"
import { delimiter, join } from "node:path"
import { fileURLToPath } from "node:url"

/** One line of the final summary table. */
export interface Row {
  readonly benchmark: string
  readonly metric: string
  readonly value: string
  readonly target: string
  /** Absent when the row is information only. */
  readonly met?: boolean
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

export const max = (values: ReadonlyArray<number>): number => Math.max(...values)

export const ms = (value: number): string => `${value.toFixed(0)} ms`
export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`
export const perSecond = (value: number): string => `${Math.round(value).toLocaleString("en-US")}/s`
export const ratio = (value: number): string => `${value.toFixed(2)}×`
export const verdict = (met: boolean): string => (met ? "target met" : "target missed")

/** Runs a full garbage collection when Node was started with --expose-gc; otherwise does nothing. */
export const collectGarbage = (): void => globalThis.gc?.()

export const section = (title: string): void => console.log(`\n=== ${title} ===`)

/** Prints rows as an aligned table. */
export const printTable = (rows: ReadonlyArray<Row>): void => {
  const cells = rows.map((row) => [row.benchmark, row.metric, row.value, row.target, row.met === undefined ? "" : verdict(row.met)])
  const header = ["benchmark", "metric", "value", "target", "verdict"]
  const widths = header.map((title, column) => Math.max(title.length, ...cells.map((line) => line[column]!.length)))
  const format = (line: ReadonlyArray<string>) => line.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()
  console.log(format(header))
  console.log(widths.map((width) => "-".repeat(width)).join("  "))
  for (const line of cells) console.log(format(line))
}

/** Absolute path of a file in bench/. */
export const benchPath = (relative: string): string => fileURLToPath(new URL(relative, import.meta.url))

const projectRoot = benchPath("..")

/**
 * Spawns this Node binary on a TypeScript file through tsx's loader, so signals and exit codes reach it directly;
 * "keel" resolves to the sources (the `@keel/source` export condition).
 */
export const spawnTs = (
  file: string,
  options: {
    readonly args?: ReadonlyArray<string>
    readonly nodeFlags?: ReadonlyArray<string>
    readonly stdio: StdioOptions
    /** Added to this process's environment. */
    readonly env?: Readonly<Record<string, string>>
  }
): ChildProcess =>
  spawn(process.execPath, [
    ...(options.nodeFlags ?? []),
    "--conditions=@keel/source",
    "--import",
    "tsx",
    file,
    ...(options.args ?? [])
  ], {
    stdio: options.stdio,
    cwd: projectRoot, // where `--import tsx` is resolved
    env: { ...process.env, ...options.env }
  })

/** Ends a benchmark: prints its rows, and sends them to bench/run.ts when it is the parent. */
export const finish = (title: string, rows: ReadonlyArray<Row>): Promise<void> => {
  section(`${title}: results`)
  printTable(rows)
  const send = process.send?.bind(process)
  if (send === undefined) return Promise.resolve()
  return new Promise((resolve) => send(rows, undefined, {}, () => {
    process.disconnect()
    resolve()
  }))
}

/** Runs a benchmark file in a child process (output goes to this terminal) and returns the rows it sent. */
export const runChild = (file: string, nodeFlags: ReadonlyArray<string> = []): Promise<{ readonly rows: ReadonlyArray<Row>; readonly code: number | null }> =>
  new Promise((resolve, reject) => {
    let rows: ReadonlyArray<Row> = []
    const child = spawnTs(file, { nodeFlags, stdio: ["ignore", "inherit", "inherit", "ipc"] })
    child.on("message", (message) => void (rows = message as ReadonlyArray<Row>))
    child.on("error", reject)
    child.on("close", (code) => resolve({ rows, code }))
  })

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** From SIGTERM to the exit; 0 if it had exited already. */
  readonly afterMs: number
}

/** SIGTERM, then SIGKILL if the server is still there `graceMs` later; resolves once it has exited. */
export const stopServer = (name: string, child: ChildProcess, graceMs = 10_000): Promise<Exit> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      return resolve({ code: child.exitCode, signal: child.signalCode, afterMs: 0 })
    }
    const killedAt = performance.now()
    const timer = setTimeout(() => {
      process.stdout.write(`${name} still running ${graceMs} ms after SIGTERM: SIGKILL\n`)
      child.kill("SIGKILL")
    }, graceMs)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, afterMs: performance.now() - killedAt })
    })
    child.kill("SIGTERM")
  })

export const describeExit = (exit: Exit): string =>
  `${exit.signal === null ? `code ${exit.code}` : `signal ${exit.signal}`} ${ms(exit.afterMs)} after SIGTERM`

/** The absolute path of `name` on PATH, or an error naming it and the Debian package that provides it. */
export const requireProgram = (name: string, debianPackage: string): string => {
  for (const directory of (process.env["PATH"] ?? "").split(delimiter)) {
    if (directory === "") continue
    const path = join(directory, name)
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {
      // not in this directory
    }
  }
  throw new Error(`${name} is not installed (not found on PATH); on Debian: apt-get install ${debianPackage}`)
}

/** A port of 127.0.0.1 nothing listens on right now: listened on at port 0, then closed. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const probe = Net.createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as Net.AddressInfo
      probe.close(() => resolve(port))
    })
  })
