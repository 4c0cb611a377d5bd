/**
 * A real `redis-server` for a test file: started on a free port of 127.0.0.1 with a temporary directory, and
 * stopped (directory removed) by `stop`. Without persistence by default; `appendonly: true` turns AOF on
 * (fsync every write) for tests that restart Redis and expect its data back, which `restart` does on the same
 * port and directory. Every wait is bounded.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { terminate } from "./childProcess.js"
import { mkdtempSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface RedisServer {
  readonly url: string
  readonly port: number
  /** The running redis-server process (a new one after `restart`). */
  readonly process: () => ChildProcess
  /** Stops the server (SIGTERM, SIGKILL after 3 s) and keeps its directory, so `restart` finds its data. */
  readonly halt: () => Promise<void>
  /** Starts it again on the same port and directory; resolves once it answers PING. */
  readonly restart: () => Promise<void>
  /** Stops the server and removes its directory. */
  readonly stop: () => Promise<void>
}

export interface RedisServerOptions {
  /** Append-only file with `appendfsync always`. Default false (no persistence at all). */
  readonly appendonly?: boolean
}

export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** Resolves once the server answers PING with PONG; rejects after `timeoutMs`. */
export const waitForPong = async (port: number, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const answered = await new Promise<boolean>((resolve) => {
      const socket = Net.connect(port, "127.0.0.1")
      const done = (ok: boolean) => {
        socket.destroy()
        resolve(ok)
      }
      socket.setTimeout(500, () => done(false))
      socket.once("error", () => done(false))
      socket.once("connect", () => socket.write("PING\r\n"))
      socket.once("data", (data) => done(data.toString().startsWith("+PONG")))
    })
    if (answered) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms`)
}

export const startRedis = async (options: RedisServerOptions = {}): Promise<RedisServer> => {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), "keel-redis-"))
  const persistence = options.appendonly === true
    ? ["--appendonly", "yes", "--appendfsync", "always"]
    : ["--appendonly", "no"]
  let child: ChildProcess
  let exited: Promise<void>
  const launch = () => {
    child = spawn("redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--save", "", ...persistence, "--dir", dir
    ], { stdio: "ignore" })
    exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  }
  const halt = () => terminate(child, exited)
  const stop = async () => {
    await halt()
    rmSync(dir, { recursive: true, force: true })
  }
  const restart = async () => {
    await halt()
    launch()
    await waitForPong(port, 10_000)
  }
  launch()
  try {
    await waitForPong(port, 10_000)
  } catch (error) {
    await stop()
    throw error
  }
  return { url: `redis://127.0.0.1:${port}`, port, process: () => child, halt, restart, stop }
}
