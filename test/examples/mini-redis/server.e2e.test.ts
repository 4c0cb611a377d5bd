/**
 * mini-redis as its users meet it: a real process on the port it picked, talked to by redis-cli,
 * redis-benchmark, ioredis and raw sockets, stopped with a real SIGTERM, and pushed past its file
 * descriptor limit (set on the running process with `prlimit`). Every child process, client
 * call and wait is bounded in time.
 */
import { Redis } from "ioredis"
import { execFile, spawn } from "node:child_process"
import { readdirSync } from "node:fs"
import * as Net from "node:net"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { killLeftovers, type RunningProcess, startTypeScript } from "../../support/childProcess.js"

const entry = "examples/mini-redis/main.ts"
const host = "127.0.0.1"

afterAll(killLeftovers)

interface Server {
  readonly run: RunningProcess
  readonly port: number
}

const start = async (env: Record<string, string> = {}): Promise<Server> => {
  const run = startTypeScript(entry, ["--port", "0"], env)
  const [, port] = await run.waitForOutput(/mini-redis 7\.0\.0 listening on 127\.0\.0\.1:(\d+)/, 30_000)
  return { run, port: Number(port) }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** `promise`, or a rejection naming `what` once `ms` have passed. */
const within = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs a program to its end (killed at `timeoutMs`); a non-zero exit is returned, not thrown. */
const runProgram = (file: string, args: ReadonlyArray<string>, timeoutMs: number, input = "") =>
  new Promise<Ran>((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error === null) return resolve({ code: 0, stdout, stderr })
        if (typeof error.code === "number" && !error.killed) return resolve({ code: error.code, stdout, stderr })
        reject(new Error(`${file} ${args.join(" ")}: ${error.message}\n${stdout}${stderr}`))
      }
    )
    // A program that exits without reading its input closes the pipe: nothing to report.
    child.stdin?.on("error", () => {})
    child.stdin?.end(input)
  })

const cli = (port: number, ...args: Array<string>) => runProgram("redis-cli", ["-h", host, "-p", String(port), ...args], 10_000)

/** What redis-cli prints to a pipe, with its exit code. */
const cliOutput = async (port: number, ...args: Array<string>) => {
  const ran = await cli(port, ...args)
  expect(ran.stderr).toBe("")
  expect(ran.code).toBe(0)
  return ran.stdout
}

interface RawClient {
  readonly socket: Net.Socket
  readonly received: () => Buffer
  readonly errors: ReadonlyArray<NodeJS.ErrnoException>
  /** Resolves with everything received once `done` holds of it; rejects at `timeoutMs` or if the socket closes first. */
  readonly waitFor: (done: (received: Buffer) => boolean, timeoutMs: number) => Promise<Buffer>
  /** Resolves once the socket has closed; rejects at `timeoutMs`. */
  readonly waitClosed: (timeoutMs: number) => Promise<void>
}

const rawSockets = new Set<Net.Socket>()
const redisClients = new Set<Redis>()

afterEach(() => {
  for (const socket of rawSockets) socket.destroy()
  rawSockets.clear()
  for (const client of redisClients) client.disconnect()
  redisClients.clear()
})

const connectRaw = (port: number): Promise<RawClient> =>
  new Promise((resolve, reject) => {
    const socket = Net.createConnection({ host, port })
    rawSockets.add(socket)
    const chunks: Array<Buffer> = []
    const errors: Array<NodeJS.ErrnoException> = []
    const listeners = new Set<() => void>()
    let closed = false
    const notify = () => {
      for (const listener of listeners) listener()
    }
    const received = () => Buffer.concat(chunks)
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      notify()
    })
    socket.on("error", (error) => errors.push(error))
    socket.on("close", () => {
      closed = true
      notify()
    })
    const waitFor = (done: (received: Buffer) => boolean, timeoutMs: number) =>
      within(
        new Promise<Buffer>((resolveWait, rejectWait) => {
          const check = () => {
            const data = received()
            if (done(data)) {
              listeners.delete(check)
              resolveWait(data)
            } else if (closed) {
              listeners.delete(check)
              rejectWait(new Error(`socket closed after ${JSON.stringify(data.toString("latin1"))}`))
            }
          }
          listeners.add(check)
          check()
        }),
        timeoutMs,
        `waiting for a reply (so far ${JSON.stringify(received().toString("latin1").slice(0, 200))})`
      )
    const waitClosed = (timeoutMs: number) =>
      within(
        new Promise<void>((resolveClosed) => {
          const check = () => {
            if (!closed) return
            listeners.delete(check)
            resolveClosed()
          }
          listeners.add(check)
          check()
        }),
        timeoutMs,
        "waiting for the server to close the connection"
      )
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no connection to ${host}:${port} within 5000 ms`))
    }, 5_000)
    socket.once("connect", () => {
      clearTimeout(timer)
      resolve({ socket, received, errors, waitFor, waitClosed })
    })
    socket.once("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
  })

/** Writes `request` and resolves with the first `expected.length` bytes that come back. */
const exchange = async (client: RawClient, request: string, expected: string) => {
  const before = client.received().length
  client.socket.write(request)
  const data = await client.waitFor((received) => received.length - before >= expected.length, 5_000)
  return data.subarray(before).toString("latin1")
}

/** An ioredis client with its defaults, ready (its ready check sends INFO) within a bound. */
const connectRedis = async (port: number) => {
  const client = new Redis({ host, port, lazyConnect: false, maxRetriesPerRequest: 1 })
  redisClients.add(client)
  const errors: Array<Error> = []
  client.on("error", (error: Error) => errors.push(error))
  await within(
    new Promise<void>((resolve) => {
      if (client.status === "ready") resolve()
      else client.once("ready", () => resolve())
    }),
    10_000,
    `ioredis ready (status ${client.status}, errors ${errors.map((error) => error.message).join("; ")})`
  )
  return { client, errors }
}

const quit = async (client: Redis) => {
  expect(await within(client.quit(), 5_000, "QUIT")).toBe("OK")
  redisClients.delete(client)
}

describe("mini-redis with real clients", () => {
  let server: Server | undefined

  beforeAll(async () => {
    server = await start()
  })

  afterAll(async () => {
    if (server === undefined) return
    server.run.signal("SIGTERM")
    expect(await server.run.waitForExit(20_000)).toEqual({ code: 0, signal: null })
  })

  const port = () => server!.port

  it("answers redis-cli: PING, SET/GET, expiry with PX, INCR, DEL and Redis's unknown-command error", async () => {
    expect(await cliOutput(port(), "PING")).toBe("PONG\n")
    expect(await cliOutput(port(), "SET", "k", "v")).toBe("OK\n")
    expect(await cliOutput(port(), "GET", "k")).toBe("v\n")
    expect(await cliOutput(port(), "GET", "never-set")).toBe("\n") // nil, as redis-cli prints it to a pipe

    // One redis-cli session for the pair, so that GET is sent well inside the 150 ms.
    const expiring = await runProgram("redis-cli", ["-h", host, "-p", String(port())], 10_000, "SET e 1 PX 150\nGET e\n")
    expect(expiring).toEqual({ code: 0, stdout: "OK\n1\n", stderr: "" })
    await sleep(400)
    expect(await cliOutput(port(), "GET", "e")).toBe("\n")

    expect(await cliOutput(port(), "INCR", "n")).toBe("1\n")
    expect(await cliOutput(port(), "INCR", "n")).toBe("2\n")
    expect(await cliOutput(port(), "DEL", "k", "n")).toBe("2\n")
    expect(await cliOutput(port(), "GET", "k")).toBe("\n")

    const unknown = await cli(port(), "FOO", "bar")
    expect(unknown.stdout).toMatch(/^ERR unknown command 'FOO', with args beginning with: 'bar' \n/)
  })

  it("delivers to a redis-cli subscriber what another redis-cli publishes", async () => {
    const subscriber = spawn("redis-cli", ["-h", host, "-p", String(port()), "SUBSCRIBE", "news"], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    try {
      let output = ""
      subscriber.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
      const printed = (text: string) =>
        within(
          new Promise<void>((resolve) => {
            const check = () => output.includes(text) && resolve()
            subscriber.stdout.on("data", check)
            check()
          }),
          5_000,
          `redis-cli SUBSCRIBE printing ${JSON.stringify(text)} (so far ${JSON.stringify(output)})`
        )
      await printed("subscribe\nnews\n1\n")
      expect(await cliOutput(port(), "PUBLISH", "news", "hello")).toBe("1\n")
      expect(await cliOutput(port(), "PUBLISH", "elsewhere", "unheard")).toBe("0\n")
      await printed("message\nnews\nhello\n")
      expect(output).toBe("subscribe\nnews\n1\nmessage\nnews\nhello\n")
    } finally {
      subscriber.kill("SIGKILL")
    }
  })

  it("answers inline commands sent together in one write, in order", async () => {
    const client = await connectRaw(port())
    expect(await exchange(client, "PING\r\nECHO hi\r\n", "+PONG\r\n$2\r\nhi\r\n")).toBe("+PONG\r\n$2\r\nhi\r\n")
    expect(client.errors).toEqual([])
  })

  it("serves ioredis with its default options: ready check, SET/GET, INCR, a pipeline, TTL and PTTL", async () => {
    const { client, errors } = await connectRedis(port())
    expect(client.status).toBe("ready")
    const call = <A>(promise: Promise<A>, what: string) => within(promise, 5_000, what)

    expect(await call(client.set("io:k", "value"), "SET")).toBe("OK")
    expect(await call(client.get("io:k"), "GET")).toBe("value")
    expect(await call(client.get("io:missing"), "GET")).toBeNull()
    expect(await call(client.incr("io:n"), "INCR")).toBe(1)
    expect(await call(client.incr("io:n"), "INCR")).toBe(2)

    const pipeline = client.pipeline()
    for (let index = 0; index < 100; index++) pipeline.set(`io:p:${index}`, `value-${index}`)
    for (let index = 0; index < 100; index++) pipeline.get(`io:p:${index}`)
    const results = await call(pipeline.exec(), "pipeline")
    expect(results).toEqual([
      ...Array.from({ length: 100 }, () => [null, "OK"]),
      ...Array.from({ length: 100 }, (_, index) => [null, `value-${index}`])
    ])

    expect(await call(client.set("io:t", "v", "EX", 10), "SET EX")).toBe("OK")
    expect(await call(client.ttl("io:t"), "TTL")).toBe(10)
    const pttl = await call(client.pttl("io:t"), "PTTL")
    expect(pttl).toBeGreaterThan(9_000)
    expect(pttl).toBeLessThanOrEqual(10_000)
    expect(await call(client.ttl("io:k"), "TTL")).toBe(-1)
    expect(await call(client.ttl("io:missing"), "TTL")).toBe(-2)

    await quit(client)
    expect(errors).toEqual([])
  })

  it("runs redis-benchmark's PING, SET, GET and INCR to the end without an error", async () => {
    const ran = await runProgram(
      "redis-benchmark",
      ["-h", host, "-p", String(port()), "-t", "ping,set,get,incr", "-n", "20000", "-q"],
      60_000
    )
    expect(ran.code, ran.stdout + ran.stderr).toBe(0)
    const finished = new Map<string, number>()
    for (const line of ran.stdout.split(/[\r\n]+/)) {
      const match = line.match(/^\s*([A-Z_]+): ([\d.]+) requests per second/)
      if (match !== null) finished.set(match[1]!, Number(match[2]))
    }
    const tests = [...finished.keys()]
    expect(tests).toEqual(expect.arrayContaining(["PING_INLINE", "SET", "GET", "INCR"]))
    expect(tests.some((name) => name === "PING_MBULK" || name === "PING")).toBe(true)
    for (const rate of finished.values()) expect(rate).toBeGreaterThan(0)
    expect(ran.stdout + ran.stderr).not.toMatch(/ERR|error/i)
  }, 90_000)

  it("answers a protocol error with Redis's wording and closes only that connection", async () => {
    const witness = await connectRaw(port())
    const { client, errors } = await connectRedis(port())
    expect(await exchange(witness, "PING\r\n", "+PONG\r\n")).toBe("+PONG\r\n")

    const bad = await connectRaw(port())
    bad.socket.write("*1\r\n$999999999999\r\n")
    const expected = "-ERR Protocol error: invalid bulk length\r\n"
    await bad.waitClosed(5_000)
    expect(bad.received().toString("latin1")).toBe(expected)

    expect(await exchange(witness, "PING\r\n", "+PONG\r\n")).toBe("+PONG\r\n")
    expect(await within(client.ping(), 5_000, "PING")).toBe("PONG")
    await quit(client)
    expect(errors).toEqual([])
    expect(witness.errors).toEqual([])
  })
})

describe("mini-redis on SIGTERM", () => {
  afterEach(killLeftovers)

  it("answers a pipelined batch it has read, closes at a reply boundary and exits 0", async () => {
    const server = await start()
    const client = await connectRaw(server.port)
    const incr = "*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n"
    client.socket.write(incr.repeat(1000))
    server.run.signal("SIGTERM")

    await client.waitClosed(15_000)
    expect(await server.run.waitForExit(20_000)).toEqual({ code: 0, signal: null })

    const text = client.received().toString("latin1")
    expect(text, "only complete integer replies").toMatch(/^(?::\d+\r\n)*$/)
    const replies = (text.match(/:\d+\r\n/g) ?? []).map((reply) => Number(reply.slice(1, -2)))
    expect(replies.length).toBeLessThanOrEqual(1000)
    expect(replies).toEqual(Array.from({ length: replies.length }, (_, index) => index + 1))
    expect(server.run.output()).toMatch(/shutdown clean: trigger SIGTERM/)
  })
  it("serves its clients, connected and new, through the pre-stop delay, then drains and exits 0", async () => {
    const server = await start({ KEEL_PRE_STOP_DELAY: "2 seconds" })
    const { client: connected } = await connectRedis(server.port)
    expect(await connected.set("k", "before")).toBe("OK")
    const signalled = Date.now()
    server.run.signal("SIGTERM")
    await server.run.waitForOutput(/shutting down \(SIGTERM\): not ready; serving on for the pre-stop delay of 2s/, 5_000)
    // Within the delay: the connected client is answered, and a new client is accepted and answered.
    expect(await connected.set("k", "during")).toBe("OK")
    expect(await cliOutput(server.port, "GET", "k")).toBe("during\n")
    expect(Date.now() - signalled).toBeLessThan(2_000)
    expect(server.run.output()).not.toMatch(/draining \(SIGTERM\)/)
    // Then the drain: the connection closes between two commands, the listener refuses, the process exits 0.
    await server.run.waitForOutput(/draining \(SIGTERM\): intake closed/, 5_000)
    expect(await server.run.waitForExit(10_000)).toEqual({ code: 0, signal: null })
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(2_000)
    expect((await cli(server.port, "PING")).code).not.toBe(0)
    expect(server.run.output()).toMatch(/shutdown clean: trigger SIGTERM.*phases: preStop (19\d\d|2\d\d\d) ms/)
    connected.disconnect()
  })
})

describe("mini-redis out of file descriptors", () => {
  afterEach(killLeftovers)

  it("sheds connections past the process's file limit, serves the others, and accepts again once some close", async () => {
    const server = await start()
    const pid = server.run.child.pid!
    const spare = 8
    const limit = readdirSync(`/proc/${pid}/fd`).length + spare
    expect((await runProgram("prlimit", ["--pid", String(pid), `--nofile=${limit}:${limit}`], 5_000)).code).toBe(0)

    // Every connection reaches the kernel's queue; past the limit, Node's libuv accepts and closes at once.
    const clients = await Promise.all(Array.from({ length: 3 * spare }, () => connectRaw(server.port)))
    const outcomes = await Promise.all(
      clients.map((client) => exchange(client, "PING\r\n", "+PONG\r\n").catch(() => "closed"))
    )
    expect(outcomes.filter((outcome) => outcome !== "+PONG\r\n" && outcome !== "closed")).toEqual([])
    const served = clients.filter((_, index) => outcomes[index] === "+PONG\r\n")
    expect(served.length).toBeGreaterThan(0)
    expect(served.length, "most connections shed").toBeLessThan(2 * spare)
    for (const client of served) expect(await exchange(client, "PING\r\n", "+PONG\r\n")).toBe("+PONG\r\n")

    for (const client of served) client.socket.destroy()
    let answer = ""
    for (let attempt = 0; attempt < 50 && answer !== "+PONG\r\n"; attempt++) {
      const client = await connectRaw(server.port)
      answer = await exchange(client, "PING\r\n", "+PONG\r\n").catch(() => "closed")
      if (answer !== "+PONG\r\n") await sleep(100)
    }
    expect(answer).toBe("+PONG\r\n")

    server.run.signal("SIGTERM")
    expect(await server.run.waitForExit(20_000)).toEqual({ code: 0, signal: null })
  })
})
