/**
 * A real HAProxy (Debian's `haproxy`) for a test: started in the foreground on a configuration file whose
 * addresses come from the environment (`"${NAME}"` in the file), its log (one line per request, on stdout)
 * kept, and the state of each server read from its stats page as CSV, the way an operator's dashboard
 * reads it. Every wait is bounded; `stop` ends it.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { terminate } from "./childProcess.js"

export interface Haproxy {
  readonly process: ChildProcess
  /** Everything HAProxy has logged so far. */
  readonly output: () => string
  /** Each server of `backend` with its status as the stats page shows it (`UP`, `DOWN`, `UP 1/2`, `MAINT`…). */
  readonly serverStates: (backend: string) => Promise<Map<string, string>>
  /** Resolves once `server` of `backend` has `status`; rejects after `timeoutMs`. */
  readonly waitForState: (backend: string, server: string, status: string, timeoutMs: number) => Promise<void>
  /** Stops HAProxy (SIGTERM, then SIGKILL after 3 s). */
  readonly stop: () => Promise<void>
}

/**
 * Starts `haproxy -db -f configFile` with `env` added to its environment, and waits until the stats page at
 * `statsAddress` (`host:port`, served under `/stats`) answers.
 */
export const startHaproxy = async (
  configFile: string,
  env: Record<string, string>,
  statsAddress: string
): Promise<Haproxy> => {
  const child = spawn("haproxy", ["-db", "-f", configFile], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))

  const serverStates = async (backend: string) => {
    const response = await fetch(`http://${statsAddress}/stats;csv`, { signal: AbortSignal.timeout(2_000) })
    const [header, ...rows] = (await response.text()).trim().split("\n").map((line) => line.split(","))
    const column = (name: string) => header!.findIndex((field) => field.replace(/^# /, "") === name)
    const [proxy, server, status] = [column("pxname"), column("svname"), column("status")]
    return new Map(
      rows.filter((row) => row[proxy] === backend && row[server] !== "BACKEND").map((row) => [row[server]!, row[status]!])
    )
  }

  const waitForState = async (backend: string, server: string, status: string, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs
    let last: string | undefined
    while (Date.now() < deadline) {
      last = (await serverStates(backend)).get(server)
      if (last === status) return
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error(`HAProxy: ${backend}/${server} not ${status} within ${timeoutMs} ms (last ${String(last)})`)
  }

  const stop = () => terminate(child, exited)

  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}:\n${output}`)
    const answered = await fetch(`http://${statsAddress}/stats;csv`, { signal: AbortSignal.timeout(1_000) })
      .then((response) => response.ok, () => false)
    if (answered) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`haproxy's stats page did not answer within 10 s:\n${output}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { process: child, output: () => output, serverStates, waitForState, stop }
}
