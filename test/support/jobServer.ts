/**
 * The job-server example as tests drive it: a real process (`examples/job-server/main.ts`) started with the
 * settings a test gives, and what its `LOG_LEVEL=Debug` log says about each job (every start, with its
 * delivery and attempt, and every completion, with a timestamp). Several tests count from these lines
 * how many times each job ran, across processes that come and go.
 */
import { type RunningProcess, startTypeScript } from "./childProcess.js"

export interface JobServer {
  readonly label: string
  readonly run: RunningProcess
  readonly base: string
  readonly port: number
}

/** A job-server process with `env` (`PORT=0` unless given) and debug logs, once it listens. */
export const startJobServer = async (label: string, env: Record<string, string>): Promise<JobServer> => {
  const run = startTypeScript("examples/job-server/main.ts", [], { PORT: "0", LOG_LEVEL: "Debug", ...env })
  const [, port] = await run.waitForOutput(/listening on http:\/\/127\.0\.0\.1:(\d+)/, 60_000)
  return { label, run, base: `http://127.0.0.1:${port}`, port: Number(port) }
}

export const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))

/** Calls `probe` every `everyMs` until it returns a value, which it resolves with; rejects after `timeoutMs`. */
export const waitFor = async <A>(
  probe: () => A | undefined | Promise<A | undefined>,
  timeoutMs: number,
  what: string,
  everyMs = 50
): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await pause(everyMs)
  }
}

/** A job's start, as logged. */
export interface Start {
  readonly id: string
  readonly at: number
  readonly delivery: number
  readonly attempt: number
}

/** The complete lines of a process's output so far (a line still being written is left out). */
export const linesOf = (output: string) => output.slice(0, output.lastIndexOf("\n") + 1).split("\n")

const startLine = /^timestamp=(\S+) level=DEBUG fiber=#\d+ message="job (\S+) started: delivery (\d+), attempt (\d+)"/
const completedLine = /^timestamp=(\S+) level=DEBUG fiber=#\d+ message="job (\S+) completed after \d+ attempt\(s\)"/

export const startsIn = (output: string): Array<Start> =>
  linesOf(output).flatMap((line) => {
    const match = line.match(startLine)
    return match === null
      ? []
      : [{ id: match[2]!, at: Date.parse(match[1]!), delivery: Number(match[3]), attempt: Number(match[4]) }]
  })

export const completionsIn = (output: string): Array<{ id: string; at: number }> =>
  linesOf(output).flatMap((line) => {
    const match = line.match(completedLine)
    return match === null ? [] : [{ id: match[2]!, at: Date.parse(match[1]!) }]
  })

/** Jobs a process started and has not (yet) logged completed. */
export const inFlightIn = (output: string): Array<Start> => {
  const completed = new Set(completionsIn(output).map((completion) => completion.id))
  return startsIn(output).filter((start) => !completed.has(start.id))
}

export const countBy = (ids: ReadonlyArray<string>) => {
  const counts = new Map<string, number>()
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
  return counts
}

/** The shutdown report's log line, cut to its first line (the rest, logged as `\\n`-separated details, is left out). */
export const shutdownReportOf = (output: string) =>
  (linesOf(output).find((line) => line.includes(`message="shutdown `)) ?? "").split("\\n")[0]!
