/**
 * Starts a real Node process running a TypeScript entry point (through tsx's loader, without npm or the
 * tsx CLI in between, so signals and exit codes reach the process itself) and lets a test wait for its
 * output and its exit. Every wait is bounded; a process left running when a test ends is killed.
 *
 * In the repository, `import … from "keel"` resolves to the TypeScript sources through the package's
 * `@keel/source` export condition; in a project that installed the packed tarball it resolves to `dist/`,
 * as it does for users (`startTypeScriptIn`, `startNode`).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

export const repositoryRoot = fileURLToPath(new URL("../..", import.meta.url))

/** The export condition under which "keel" and its subpaths resolve to the sources. */
export const sourceCondition = "--conditions=@keel/source"

/** tsx's loader, by path, so that a project outside the repository need not install tsx. */
const tsxLoader = pathToFileURL(join(repositoryRoot, "node_modules", "tsx", "dist", "loader.mjs")).href

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface RunningProcess {
  readonly child: ChildProcess
  /** Everything written to stdout and stderr so far. */
  readonly output: () => string
  /** Resolves with the first match of `pattern` in the output (searched from `from`), or rejects after `timeoutMs`. */
  readonly waitForOutput: (pattern: RegExp, timeoutMs: number, from?: number) => Promise<RegExpMatchArray>
  readonly exited: Promise<Exited>
  /** Resolves with the exit, or rejects after `timeoutMs` (killing the process). */
  readonly waitForExit: (timeoutMs: number) => Promise<Exited>
  readonly signal: (signal: NodeJS.Signals) => void
}

/**
 * Stops a program a test started: SIGTERM, then SIGKILL if it has not exited 3 s later; resolves once
 * `exited` (its exit event) has. Does nothing to one that has exited already.
 */
export const terminate = async (child: ChildProcess, exited: Promise<unknown>): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill("SIGTERM")
  const killer = setTimeout(() => child.kill("SIGKILL"), 3_000)
  await exited
  clearTimeout(killer)
}

const started = new Set<ChildProcess>()

export const killLeftovers = () => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  started.clear()
}

/** A TypeScript entry point of the repository, with "keel" resolved to the sources. */
export const startTypeScript = (entry: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}): RunningProcess =>
  startNodeProcess([sourceCondition, "--import", tsxLoader, entry, ...args], repositoryRoot, env)

/** A TypeScript file of another project (one that installed the packed package), run from that project. */
export const startTypeScriptIn = (project: string, entry: string, env: NodeJS.ProcessEnv = {}): RunningProcess =>
  startNodeProcess(["--import", tsxLoader, entry], project, env)

/** A JavaScript file run by plain `node`, with no loader and no flags, from `project`. */
export const startNode = (project: string, entry: string, env: NodeJS.ProcessEnv = {}): RunningProcess =>
  startNodeProcess([entry], project, env)

const startNodeProcess = (nodeArgs: ReadonlyArray<string>, cwd: string, env: NodeJS.ProcessEnv): RunningProcess => {
  const child = spawn(process.execPath, nodeArgs, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  started.add(child)
  let output = ""
  const listeners = new Set<() => void>()
  const append = (chunk: Buffer) => {
    output += chunk.toString()
    for (const listener of listeners) listener()
  }
  child.stdout!.on("data", append)
  child.stderr!.on("data", append)
  const exited = new Promise<Exited>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })))

  const waitForOutput = (pattern: RegExp, timeoutMs: number, from = 0) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const match = output.slice(from).match(pattern)
        if (match === null) return
        done()
        resolve(match)
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`no output matching ${pattern} within ${timeoutMs} ms; output so far:\n${output}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        listeners.delete(check)
      }
      listeners.add(check)
      check()
    })

  const waitForExit = (timeoutMs: number) =>
    Promise.race([
      exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => {
          child.kill("SIGKILL")
          reject(new Error(`process still running after ${timeoutMs} ms; output:\n${output}`))
        }, timeoutMs).unref()
      )
    ])

  return { child, output: () => output, waitForOutput, exited, waitForExit, signal: (name) => child.kill(name) }
}
