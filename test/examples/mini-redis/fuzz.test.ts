/**
 * mini-redis fuzzed over the wire: a server started in this process takes at least 100,000 seeded random
 * and mutated frames (valid commands, random bytes, flipped/inserted/deleted bytes, truncations, broken,
 * huge and negative length headers, `*` counts past the limit, non-`$` items, unbalanced quotes, inline
 * lines past the limit) over 20 raw connections, each frame cut into chunks at random points. A connection
 * the server closes after a protocol error is replaced by a new one. Meanwhile a well-behaved ioredis client
 * keeps writing and reading its own keys and must always be answered, correctly and in time; at the end
 * every fuzz connection is released by the server and memory has stayed bounded. Every loop and wait is
 * bounded in count and time; the seed (in the test's name) reproduces the input.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { Lifecycle } from "keel"
import * as Net from "node:net"
import { make } from "../../../examples/mini-redis/server.js"
import { eventually } from "../../support/eventually.js"

const host = "127.0.0.1"
const seed = Number(process.env["MINI_REDIS_FUZZ_SEED"] ?? 0x5eed2024) >>> 0
const limits = { maxBulkLength: 1 << 20, maxMultibulkLength: 1 << 14, maxInlineLength: 64 * 1024 }
const targetFrames = 100_000
const fuzzConnections = 20
const probeEvery = 2_500

/**
 * A reproducible stream of fuzz input from `seed` (xorshift32): `frame()` is one frame of any kind, valid
 * or not, and `cuts(bytes)` the chunks it is sent in.
 */
const fuzzer = (seed: number) => {
  let state = seed | 0 || 0x2545f491
  const next = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return state >>> 0
  }
  for (let warm = 0; warm < 8; warm++) next()
  const int = (n: number) => next() % n
  const chance = (p: number) => next() / 0x1_0000_0000 < p
  const pick = <A>(values: ReadonlyArray<A>): A => values[int(values.length)]!
  const bytes = (n: number) => {
    const out = Buffer.allocUnsafe(n)
    let word = 0
    for (let index = 0; index < n; index++) {
      if ((index & 3) === 0) word = next()
      out[index] = word >>> ((index & 3) * 8)
    }
    return out
  }
  const ascii = (n: number) => Array.from({ length: n }, () => String.fromCharCode(0x21 + int(94))).join("")

  const tokens = [
    "", "0", "1", "-1", "-0", "01", "+1", " 1", "1.5", "9223372036854775807", "-9223372036854775808",
    "9223372036854775808", "99999999999999999999", "NX", "XX", "GT", "LT", "EX", "PX", "EXAT", "PXAT",
    "KEEPTTL", "GET", "nx", "ex", "__proto__", "constructor", "toString", "hasOwnProperty", "prototype",
    "\r\n", "\r", "\n", "*1\r\n", "$-1\r\n", "\"", "'", "\\", "\\x4", "\x00", "\xff", "*", "?", "[a-", "[^",
    "lib-name", "lib-ver", "SETNAME", "GETNAME", "SETINFO"
  ]
  const key = () => `fz:${int(64)}`
  const channel = () => (chance(0.5) ? `ch${int(8)}` : pick(["*", "ch?", "c[h]*", "[", "\\", "*a*a*a*b", ascii(int(12))]))
  const arg = (): string | Buffer => {
    switch (int(8)) {
      case 0:
      case 1:
        return pick(tokens)
      case 2:
        return key()
      case 3:
        return String(int(2_000) - 1_000)
      case 4:
        return ascii(int(24))
      case 5:
        return bytes(int(40))
      case 6:
        return "9".repeat(1 + int(25))
      default:
        return chance(0.5) ? channel() : String(int(100_000))
    }
  }
  const args = (n: number) => Array.from({ length: n }, arg)
  const known = [
    "GET", "SET", "DEL", "EXISTS", "INCR", "EXPIRE", "PEXPIRE", "TTL", "PTTL", "ECHO", "PING", "DBSIZE",
    "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "RESET", "COMMAND", "CLIENT", "HELLO"
  ]
  const setOptions = ["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "xx", "ex"]
  const command = (): Array<string | Buffer> => {
    const roll = int(1_000)
    // A known command with any arguments: arity errors and options in any order.
    if (roll < 150) return [pick(known).toLowerCase(), ...args(int(6))]
    // A command mini-redis does not know. FLUSHDB is left out: it would empty the probe's keys.
    if (roll < 200) return [chance(0.5) ? ascii(1 + int(10)) : bytes(1 + int(10)), ...args(int(4))]
    if (roll < 203) return ["QUIT"]
    switch (pick(known)) {
      case "GET":
        return ["GET", key()]
      case "SET": {
        const options = Array.from({ length: int(4) }, () => pick(setOptions))
          .flatMap((option) => (/^(EX|PX|EXAT|PXAT|ex)$/.test(option) ? [option, String(int(5_000) - 10)] : [option]))
        return ["SET", key(), chance(0.3) ? String(int(100)) : arg(), ...options]
      }
      case "DEL":
        return ["DEL", ...Array.from({ length: 1 + int(4) }, key)]
      case "EXISTS":
        return ["EXISTS", ...Array.from({ length: 1 + int(4) }, key)]
      case "INCR":
        return ["INCR", key()]
      case "EXPIRE":
      case "PEXPIRE":
        return [pick(["EXPIRE", "PEXPIRE"]), key(), String(int(20_000) - 100), ...(chance(0.3) ? [pick(["NX", "XX", "GT", "LT", "ZZ"])] : [])]
      case "TTL":
      case "PTTL":
        return [pick(["TTL", "PTTL"]), key()]
      case "ECHO":
        return ["ECHO", arg()]
      case "PING":
        return chance(0.5) ? ["PING"] : ["PING", arg()]
      case "PUBLISH":
        return ["PUBLISH", channel(), arg()]
      case "SUBSCRIBE":
      case "PSUBSCRIBE":
        return [pick(["SUBSCRIBE", "PSUBSCRIBE"]), ...Array.from({ length: 1 + int(3) }, channel)]
      case "UNSUBSCRIBE":
      case "PUNSUBSCRIBE":
        return [pick(["UNSUBSCRIBE", "PUNSUBSCRIBE"]), ...Array.from({ length: int(3) }, channel)]
      case "COMMAND":
        return chance(0.5) ? ["COMMAND"] : ["COMMAND", pick(["COUNT", "DOCS", "INFO", "x"])]
      case "CLIENT":
        return ["CLIENT", pick(["SETNAME", "GETNAME", "SETINFO", "setname", "LIST", "ID"]), ...args(int(3))]
      case "HELLO":
        return ["HELLO", ...(chance(0.8) ? [pick(["2", "3", "x", "-1", "02"])] : []), ...(chance(0.4) ? ["SETNAME", arg()] : [])]
      case "DBSIZE":
        return ["DBSIZE"]
      default:
        return ["INFO", ...(chance(0.7) ? [pick(["server", "clients", "keyspace", "all", "default", "nosuch", "__proto__", "constructor", "tostring"])] : [])]
    }
  }

  const multibulk = (parts: ReadonlyArray<string | Buffer>) =>
    Buffer.concat([
      Buffer.from(`*${parts.length}\r\n`),
      ...parts.flatMap((part) => {
        const data = typeof part === "string" ? Buffer.from(part, "latin1") : part
        return [Buffer.from(`$${data.length}\r\n`), data, Buffer.from("\r\n")]
      })
    ])
  const inline = (parts: ReadonlyArray<string | Buffer>) => {
    const words = parts.map((part) => {
      const data = typeof part === "string" ? Buffer.from(part, "latin1") : part
      if (data.length > 0 && data.every((byte) => byte > 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x27)) {
        return data.toString("latin1")
      }
      return `"${[...data].map((byte) => `\\x${byte.toString(16).padStart(2, "0")}`).join("")}"`
    })
    return Buffer.from(`${words.join(pick([" ", "  ", "\t"]))}${pick(["\r\n", "\n"])}`, "latin1")
  }

  /** Where the digits of each `*n` / `$n` header are. */
  const headers = (frame: Buffer) => {
    const found: Array<{ readonly start: number; readonly end: number; readonly type: number }> = []
    for (let index = 0; index < frame.length && found.length < 64; index++) {
      const type = frame[index]!
      if ((type === 0x2a || type === 0x24) && (index === 0 || frame[index - 1] === 0x0a)) {
        let end = index + 1
        while (end < frame.length && frame[end] !== 0x0d && frame[end] !== 0x0a) end++
        found.push({ start: index + 1, end, type })
      }
    }
    return found
  }
  const replaceHeader = (frame: Buffer, only: number | undefined, text: (old: string) => string) => {
    const all = headers(frame).filter((header) => only === undefined || header.type === only)
    if (all.length === 0) return frame
    const { end, start } = pick(all)
    const digits = Buffer.from(text(frame.toString("latin1", start, end)), "latin1")
    return Buffer.concat([frame.subarray(0, start), digits, frame.subarray(end)])
  }
  const specials = [0x0d, 0x0a, 0x2a, 0x24, 0x2d, 0x30, 0x39, 0x22, 0x27, 0x5c, 0x20, 0x00]
  const mutateOnce = (frame: Buffer): Buffer => {
    const at = int(frame.length + 1)
    switch (int(12)) {
      case 0: {
        const copy = Buffer.from(frame)
        if (copy.length > 0) copy[int(copy.length)] ^= 1 + int(255)
        return copy
      }
      case 1: {
        const inserted = Buffer.from(Array.from({ length: 1 + int(4) }, () => (chance(0.5) ? pick(specials) : int(256))))
        return Buffer.concat([frame.subarray(0, at), inserted, frame.subarray(at)])
      }
      case 2:
        return Buffer.concat([frame.subarray(0, at), frame.subarray(at + 1 + int(4))])
      case 3:
        return frame.subarray(0, at)
      case 4:
        return replaceHeader(frame, undefined, (old) => {
          const n = Number(old) || 0
          return String(pick([n + 1, n - 1, n + 2 + int(10), Math.max(0, n - 2 - int(10)), 0, int(100), int(1 << 21)]))
        })
      case 5:
        return replaceHeader(frame, 0x24, () => pick(["999999999999", "99999999999999999999", String(limits.maxBulkLength + 1), "9223372036854775807"]))
      case 6:
        return replaceHeader(frame, undefined, () => pick(["-1", "-2", "-5", "-0", "-999999999999", "--1", "-"]))
      case 7:
        return replaceHeader(frame, 0x2a, () => pick([String(limits.maxMultibulkLength + 1 + int(1_000)), "99999999999999999999", "4294967297"]))
      case 8: {
        const dollars = headers(frame).filter((header) => header.type === 0x24)
        if (dollars.length === 0) return frame
        const copy = Buffer.from(frame)
        copy[pick(dollars).start - 1] = pick([0x3a, 0x2b, 0x2d, 0x2a, 0x21, 0x30, 0x20, 0x0d, 0x61])
        return copy
      }
      case 9:
        return replaceHeader(frame, undefined, (old) => pick([` ${old}`, `+${old}`, `0${old}`, `${old} `, `${old}x`, "", "0x10", "1e3"]))
      case 10: {
        // Line endings: a lone CR or LF, or none, where CRLF was.
        const text = frame.toString("latin1")
        const crlf = text.indexOf("\r\n", int(text.length))
        if (crlf < 0) return frame
        return Buffer.from(text.slice(0, crlf) + pick(["\n", "\r", "", "\r\r\n", "\n\r"]) + text.slice(crlf + 2), "latin1")
      }
      default:
        // A bulk under the limit whose bytes never all arrive: what follows is read into it.
        return Buffer.concat([frame.subarray(0, at), Buffer.from(`*2\r\n$3\r\nSET\r\n$${limits.maxBulkLength - int(1_000)}\r\n`), bytes(int(64))])
    }
  }
  const unbalanced = () =>
    Buffer.from(
      pick([
        `SET ${key()} "abc def\r\n`,
        `GET '${key()}\r\n`,
        `ECHO "a"b\r\n`,
        `ECHO 'a'b\r\n`,
        `ECHO "\\"\r\n`,
        `ECHO 'it\\'s\r\n`,
        `PING "${ascii(int(40))}\r\n`,
        `"\r\n`,
        `SET ${key()} "x\\x4"\r\n`
      ]),
      "latin1"
    )

  /** One frame and what kind it is; a calm one is almost always a valid command. */
  const frame = (calm: boolean): { readonly bytes: Buffer; readonly kind: "valid" | "random" | "mutated" | "large" } => {
    if (calm && !chance(0.01)) return { bytes: chance(0.8) ? multibulk(command()) : inline(command()), kind: "valid" }
    const roll = int(1_000)
    if (roll < 400) return { bytes: multibulk(command()), kind: "valid" }
    if (roll < 480) return { bytes: inline(command()), kind: "valid" }
    if (roll < 620) return { bytes: bytes(1 + int(chance(0.1) ? 2_000 : 64)), kind: "random" }
    if (roll < 660) return { bytes: unbalanced(), kind: "mutated" }
    if (roll < 990) {
      let mutated: Buffer = chance(0.8) ? multibulk(command()) : inline(command())
      for (let times = chance(0.25) ? 2 + int(3) : 1; times > 0; times--) mutated = mutateOnce(mutated)
      return { bytes: mutated, kind: "mutated" }
    }
    if (roll < 994) {
      // An inline line past the limit, its newline never coming, or one just within it.
      const line = chance(0.6)
        ? Buffer.alloc(limits.maxInlineLength + 1 + int(4_096), pick(["a", " ", "\"", "x"]))
        : Buffer.from(`ECHO ${"b".repeat(limits.maxInlineLength - 8 - int(100))}\r\n`)
      return { bytes: line, kind: "large" }
    }
    if (roll < 997) return { bytes: multibulk(["SET", key(), bytes(64 * 1024 + int(256 * 1024))]), kind: "large" }
    // The most arguments an array may have, or one more.
    const count = limits.maxMultibulkLength + (chance(0.7) ? 0 : 1)
    const widest = Buffer.concat([
      Buffer.from(`*${count}\r\n$3\r\nDEL\r\n`),
      Buffer.from(`$1\r\n${"abcdefgh"[int(8)]}\r\n`.repeat(count - 1))
    ])
    return { bytes: widest, kind: "large" }
  }

  const cuts = (data: Buffer): Array<Buffer> => {
    if (data.length <= 1 || chance(0.35)) return [data]
    const points = chance(0.03) && data.length < 512
      ? Array.from({ length: data.length - 1 }, (_, index) => index + 1)
      : [...new Set(Array.from({ length: 1 + int(4) }, () => 1 + int(data.length - 1)))].sort((a, b) => a - b)
    return [...points, data.length].map((point, index, all) => data.subarray(index === 0 ? 0 : all[index - 1]!, point))
  }

  return { int, chance, bytes, frame, cuts }
}

/** A promise, bounded: fails with a message naming `what` if it does not settle within `ms`. */
const bounded = <A>(what: string, ms: number, promise: Promise<A>): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

describe("mini-redis under fuzzed input", () => {
  it.scopedLive(
    `${targetFrames} random and mutated frames over ${fuzzConnections} connections (seed ${seed}): the probe is always answered, connections are released`,
    () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(Lifecycle.layer({ drainTimeout: "2 seconds", preStopDelay: 0 })).pipe(
          Effect.orDie
        )
        const server = yield* make({ port: 0, limits }).pipe(Effect.provide(context), Effect.orDie)
        // The server runs in this process: an exception it throws from a socket's handler would end a real one.
        const thrown: Array<unknown> = []
        const onThrown = (error: unknown) => void thrown.push(error)
        yield* Effect.acquireRelease(
          Effect.sync(() => process.on("uncaughtException", onThrown)),
          () => Effect.sync(() => process.off("uncaughtException", onThrown))
        )
        const port = server.address.port
        const rssBefore = process.memoryUsage().rss

        const probe = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const client = new Redis({ host, port, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: true })
            client.on("error", () => {})
            return client
          }),
          (client) => Effect.sync(() => client.disconnect())
        )
        yield* Effect.promise(() =>
          bounded("probe connection ready", 5_000, new Promise<void>((resolve) => probe.once("ready", () => resolve())))
        )

        const sockets = new Set<Net.Socket>()
        yield* Effect.addFinalizer(() => Effect.sync(() => sockets.forEach((socket) => socket.destroy())))
        const kinds = { valid: 0, random: 0, mutated: 0, large: 0 }
        const totals = { frames: 0, bytes: 0, opened: 0, calm: 0, closedByServer: 0, closedByClient: 0, aborted: 0 }
        const probeLatencies: Array<number> = []
        let probes = 0
        // Cleared when the fuzzing or the probing ends, so that the other stops too.
        let running = true
        const deadline = Date.now() + 75_000

        /** SET probe:<n>, GET it back, INCR probe:counter: each answered correctly within 5 s. */
        const probeOnce = async () => {
          const random = fuzzer(seed ^ Math.imul(0x9e3779b9, probes + 1))
          const value = random.bytes(random.int(64))
          const started = Date.now()
          const what = `probe ${probes} after ${totals.frames} frames (seed ${seed})`
          expect(await bounded(`${what}: SET`, 5_000, probe.set(`probe:${probes}`, value)), what).toBe("OK")
          expect(await bounded(`${what}: GET`, 5_000, probe.getBuffer(`probe:${probes}`)), what).toEqual(value)
          expect(await bounded(`${what}: INCR`, 5_000, probe.incr("probe:counter")), what).toBe(probes + 1)
          probeLatencies.push(Date.now() - started)
          probes++
        }

        /** One fuzz connection slot: opens connections one after another and sends each its frames. */
        const slot = async (index: number) => {
          const closing: Array<Promise<void>> = []
          for (let round = 0; round < 10_000 && running && totals.frames < targetFrames && Date.now() < deadline; round++) {
            const random = fuzzer((seed + Math.imul(7_919, index + 1) + Math.imul(104_729, round + 1)) | 0)
            const socket = Net.connect({ host, port })
            sockets.add(socket)
            socket.setNoDelay(true)
            let serverEnded = false
            let closed = false
            // Replies are read and dropped.
            socket.on("data", () => {})
            socket.on("error", () => {})
            socket.on("end", () => (serverEnded = true))
            const whenClosed = new Promise<void>((resolve) =>
              socket.once("close", () => {
                closed = true
                resolve()
              })
            )
            await bounded(`fuzz connection ${index}/${round}: connect`, 5_000, new Promise<void>((resolve, reject) => {
              socket.once("connect", () => resolve())
              socket.once("close", () => reject(new Error(`fuzz connection ${index}/${round} closed before connecting`)))
            }))
            totals.opened++
            const calm = random.chance(0.01)
            const planned = 1 + random.int(calm ? 1_000 : 300)
            if (calm) totals.calm++
            const abort = random.chance(0.1)
            for (let sent = 0; sent < planned && running && !closed && !serverEnded && totals.frames < targetFrames; sent++) {
              const { bytes, kind } = random.frame(calm)
              const chunks = random.cuts(bytes)
              for (const chunk of chunks) {
                if (closed || serverEnded) break
                if (!socket.write(chunk)) {
                  await bounded(
                    `fuzz connection ${index}/${round}: the server took no bytes for 10 s`,
                    10_000,
                    Promise.race([new Promise<void>((resolve) => socket.once("drain", () => resolve())), whenClosed])
                  )
                }
                totals.bytes += chunk.length
                await new Promise<void>((resolve) => setImmediate(resolve))
              }
              if (!closed && !serverEnded) {
                totals.frames++
                kinds[kind]++
              }
            }
            if (serverEnded || closed) {
              totals.closedByServer++
            } else if (abort) {
              // Mid-frame, without a FIN.
              socket.write(random.bytes(1 + random.int(32)))
              socket.destroy()
              totals.aborted++
            } else {
              socket.end()
              totals.closedByClient++
            }
            // The next connection opens while this one closes.
            closing.push(
              bounded(`fuzz connection ${index}/${round}: close`, 5_000, whenClosed).then(() => void sockets.delete(socket))
            )
            closing.at(-1)!.catch(() => {})
          }
          await Promise.all(closing)
        }

        const probing = Effect.promise(async () => {
          try {
            for (let check = 0; check < 100_000 && running && Date.now() < deadline + 10_000; check++) {
              if (totals.frames >= probes * probeEvery) await probeOnce()
              else await new Promise<void>((resolve) => setTimeout(resolve, 5))
            }
          } finally {
            running = false
          }
        })
        const fuzz = Effect.promise(() =>
          Promise.all(Array.from({ length: fuzzConnections }, (_, index) => slot(index))).finally(() => (running = false))
        )
        const started = Date.now()
        yield* Effect.all([fuzz, probing], { concurrency: "unbounded", discard: true })
        const elapsed = Date.now() - started

        // Every fuzz connection is gone, and so is the server's state for it: only the probe is left.
        expect(sockets.size).toBe(0)
        const stats = yield* eventually(server.stats, (stats) => stats.connections === 1 && stats.served >= totals.opened)
        expect(stats).toMatchObject({ connections: 1, pending: 0, refused: 0, acceptErrors: 0 })
        yield* Effect.promise(() => probeOnce())
        // Their subscriptions are gone with them, and the server counts one client.
        for (const channel of ["ch0", "ch7", "c", "*", "any"]) {
          expect(yield* Effect.promise(() => bounded(`PUBLISH ${channel}`, 5_000, probe.publish(channel, "after")))).toBe(0)
        }
        expect(yield* Effect.promise(() => bounded("INFO clients", 5_000, probe.info("clients")))).toContain("connected_clients:1\r\n")

        const rssGrowth = process.memoryUsage().rss - rssBefore
        yield* Effect.log(
          `mini-redis fuzz (seed ${seed}): ${totals.frames} frames (${JSON.stringify(kinds)}), ${(totals.bytes / 1e6).toFixed(1)} MB over ${totals.opened} connections ` +
            `(${totals.closedByServer} closed by the server, ${totals.calm} calm, ${totals.closedByClient} ended, ${totals.aborted} aborted) in ${elapsed} ms; ` +
            `${probes} probes, slowest ${Math.max(...probeLatencies)} ms; rss +${(rssGrowth / 1e6).toFixed(0)} MB`
        )
        expect(thrown.map(String), `seed ${seed}: the server threw`).toEqual([])
        expect(totals.frames, `seed ${seed}`).toBeGreaterThanOrEqual(targetFrames)
        expect(kinds.random + kinds.mutated).toBeGreaterThan(targetFrames / 4)
        expect(probes).toBeGreaterThanOrEqual(targetFrames / probeEvery)
        expect(totals.closedByServer).toBeGreaterThan(100)
        expect(totals.closedByClient + totals.aborted).toBeGreaterThan(10)
        expect(rssGrowth).toBeLessThan(300 * 1024 * 1024)
      }),
    120_000
  )
})
