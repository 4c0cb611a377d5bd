/**
 * A redis-server for the benchmarks that compare Keel's Redis path with BullMQ's on one server: started on a
 * free port of 127.0.0.1 with persistence off and its files in a directory the caller owns, ready once it
 * answers PING, with an admin connection for FLUSHALL between measurements.
 */
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { setTimeout as sleep } from "node:timers/promises"
import { freePort, requireProgram } from "./lib.js"

const host = "127.0.0.1"
const readyTimeoutMs = 10_000

export interface RedisServer {
  readonly child: ChildProcess
  readonly url: string
  readonly version: string
  /** A connection of this process, for FLUSHALL between measurements. */
  readonly admin: Redis
}

/**
 * redis-server on a free port, persistence off, files in `directory`; resolves once it answers PING. `track`
 * is given the child at once, so that the caller can kill it if it exits first.
 */
export const startRedisServer = async (directory: string, track: (child: ChildProcess) => void): Promise<RedisServer> => {
  const port = await freePort()
  const args = ["--port", String(port), "--bind", host, "--save", "", "--appendonly", "no", "--dir", directory, "--daemonize", "no"]
  const child = spawn(requireProgram("redis-server", "redis-server"), args, { stdio: ["ignore", "pipe", "pipe"] })
  track(child)
  let output = ""
  const keep = (chunk: Buffer) => void (output = (output + chunk.toString()).slice(-20_000))
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  let failure: string | undefined
  child.on("error", (error) => void (failure ??= error.message))
  child.on("exit", (code, signal) => void (failure ??= `exited (code ${code}, signal ${signal}) before answering PING`))
  const url = `redis://${host}:${port}`
  const admin = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  admin.on("error", () => {})
  const deadline = performance.now() + readyTimeoutMs
  while (failure === undefined && performance.now() < deadline) {
    const pong = await admin.connect().then(() => admin.ping(), () => null)
    if (pong === "PONG") {
      const info = await admin.info("server")
      return { child, url, admin, version: /redis_version:(\S+)/.exec(info)?.[1] ?? "(version unknown)" }
    }
    admin.disconnect()
    await sleep(100)
  }
  child.kill("SIGKILL")
  throw new Error(
    `redis-server ${args.join(" ")}: ${failure ?? `no PONG within ${readyTimeoutMs} ms`}\n--- its output ---\n${output}`
  )
}
