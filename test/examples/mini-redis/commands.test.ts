/**
 * The commands of the mini-redis example, checked on the wire: each reply, encoded as RESP2, is exactly the
 * text Redis 7 sends for the same request — PING and ECHO; GET and SET with its EX/PX/EXAT/PXAT, NX/XX,
 * GET and KEEPTTL options and their errors; DEL, EXISTS and INCR; EXPIRE, PEXPIRE, TTL and PTTL as the
 * clock moves; DBSIZE and FLUSHDB; the wording for unknown commands and wrong arity; QUIT, CLIENT, HELLO, AUTH,
 * INFO and COMMAND.
 */
import { describe, expect, it } from "@effect/vitest"
import { type Connection, encodeReply, execute, type ServerInfo } from "../../../examples/mini-redis/commands.js"
import { Broker } from "../../../examples/mini-redis/pubsub.js"
import * as Resp from "../../../examples/mini-redis/resp.js"
import type { Frame } from "../../../examples/mini-redis/resp.js"
import { Store } from "../../../examples/mini-redis/store.js"

// ---------------------------------------------------------------------------------------------------------
// Helpers

const serverInfo: ServerInfo = { version: "7.0.0", port: 6379, uptimeSeconds: 42, connectedClients: 3 }

/** Clock milliseconds at the start of every session: a whole second, so EXAT deadlines are easy to write. */
const start = 1_700_000_000_000

/** A fresh store and connection, with a clock that moves only when told. */
const session = () => {
  const connection: Connection = {
    id: 1,
    name: undefined,
    quitting: false,
    subscriber: { channels: new Set(), patterns: new Set(), deliver: () => {} }
  }
  const context = { store: new Store(), broker: new Broker(), now: start, connection, info: () => serverInfo }
  const answer = (...args: Array<string>) => execute(args.map((arg) => Buffer.from(arg, "latin1")), context)
  /** The reply to a command answered with one frame. */
  const run = (...args: Array<string>): Frame => answer(...args) as Frame
  /** The reply to one command, as the bytes Redis would write (read as latin1). */
  const reply = (...args: Array<string>): string => encodeReply(answer(...args)).toString("latin1")
  const advance = (ms: number) => {
    context.now += ms
  }
  return { context, connection, run, reply, advance }
}

const wire = (frame: Frame): string => Resp.encode(frame).toString("latin1")

const bulk = (value: string) => `$${Buffer.byteLength(value, "latin1")}\r\n${value}\r\n`

/** The text of a bulk string reply. */
const bulkText = (frame: Frame): string => {
  if (frame._tag !== "Bulk" || frame.value === null) throw new Error(`not a bulk string: ${wire(frame)}`)
  return frame.value.toString("latin1")
}

const nil = "$-1\r\n"
const ok = "+OK\r\n"
const syntaxError = "-ERR syntax error\r\n"
const notInteger = "-ERR value is not an integer or out of range\r\n"
const arity = (name: string) => `-ERR wrong number of arguments for '${name}' command\r\n`

// ---------------------------------------------------------------------------------------------------------
// PING, ECHO and command names

describe("PING and ECHO", () => {
  it("PING answers PONG, or echoes its one argument; two arguments are an arity error", () => {
    const { reply } = session()
    expect(reply("PING")).toBe("+PONG\r\n")
    expect(reply("PING", "hello")).toBe("$5\r\nhello\r\n")
    expect(reply("PING", "")).toBe("$0\r\n\r\n")
    expect(reply("PING", "a", "b")).toBe(arity("ping"))
  })

  it("ECHO answers its argument as a bulk string, bytes included; any other count is an arity error", () => {
    const { reply } = session()
    expect(reply("ECHO", "x")).toBe("$1\r\nx\r\n")
    expect(reply("ECHO", "a\r\nb")).toBe("$4\r\na\r\nb\r\n")
    expect(reply("ECHO")).toBe(arity("echo"))
    expect(reply("ECHO", "a", "b")).toBe(arity("echo"))
  })

  it("command names are case-insensitive", () => {
    const { reply } = session()
    expect(reply("set", "k", "v")).toBe(ok)
    expect(reply("get", "k")).toBe("$1\r\nv\r\n")
    expect(reply("GeT", "k")).toBe("$1\r\nv\r\n")
    expect(reply("pInG")).toBe("+PONG\r\n")
    expect(reply("echo", "Hi")).toBe("$2\r\nHi\r\n")
  })
})

// ---------------------------------------------------------------------------------------------------------
// GET and SET

describe("GET and SET", () => {
  it("SET keeps a value read from a large chunk without keeping the chunk", () => {
    const { context } = session()
    const chunk = Buffer.alloc(64 * 1024, "x")
    const value = chunk.subarray(100, 110)
    execute([Buffer.from("SET"), Buffer.from("k"), value], context)
    const stored = context.store.get("k", context.now)!
    expect(stored.toString()).toBe("x".repeat(10))
    expect(stored.buffer).not.toBe(chunk.buffer)
  })

  it("CLIENT SETNAME keeps a name read from a large chunk without keeping the chunk", () => {
    const { context, connection } = session()
    const chunk = Buffer.alloc(64 * 1024, "n")
    execute([Buffer.from("CLIENT"), Buffer.from("SETNAME"), chunk.subarray(0, 8)], context)
    expect(String(connection.name)).toBe("nnnnnnnn")
    expect(connection.name!.buffer).not.toBe(chunk.buffer)
  })

  it("GET of a missing key is nil; SET stores, overwrites, and keeps any bytes", () => {
    const { reply } = session()
    expect(reply("GET", "k")).toBe(nil)
    expect(reply("SET", "k", "v")).toBe(ok)
    expect(reply("GET", "k")).toBe("$1\r\nv\r\n")
    expect(reply("SET", "k", "hello world")).toBe(ok)
    expect(reply("GET", "k")).toBe("$11\r\nhello world\r\n")
    expect(reply("SET", "k", "a\r\nb")).toBe(ok)
    expect(reply("GET", "k")).toBe("$4\r\na\r\nb\r\n")
    expect(reply("SET", "empty", "")).toBe(ok)
    expect(reply("GET", "empty")).toBe("$0\r\n\r\n")
    expect(reply("SET", "k")).toBe(arity("set"))
  })

  it("SET EX: TTL in seconds, PTTL in milliseconds, and the key is gone once the deadline has passed", () => {
    const { advance, reply } = session()
    expect(reply("SET", "k", "v", "EX", "10")).toBe(ok)
    expect(reply("TTL", "k")).toBe(":10\r\n")
    expect(reply("PTTL", "k")).toBe(":10000\r\n")
    advance(8_500)
    expect(reply("PTTL", "k")).toBe(":1500\r\n")
    expect(reply("TTL", "k")).toBe(":2\r\n")
    advance(1)
    expect(reply("PTTL", "k")).toBe(":1499\r\n")
    expect(reply("TTL", "k")).toBe(":1\r\n")
    advance(1_100)
    expect(reply("PTTL", "k")).toBe(":399\r\n")
    expect(reply("TTL", "k")).toBe(":0\r\n")
    expect(reply("GET", "k")).toBe("$1\r\nv\r\n")
    advance(400)
    expect(reply("GET", "k")).toBe(nil)
    expect(reply("TTL", "k")).toBe(":-2\r\n")
    expect(reply("PTTL", "k")).toBe(":-2\r\n")
  })

  it("SET PX, EXAT and PXAT set the deadline in milliseconds, or at a Unix time; option names in any case", () => {
    const { advance, reply } = session()
    expect(reply("SET", "px", "v", "PX", "1500")).toBe(ok)
    expect(reply("PTTL", "px")).toBe(":1500\r\n")
    expect(reply("TTL", "px")).toBe(":2\r\n")
    expect(reply("SET", "exat", "v", "EXAT", String(start / 1000 + 20))).toBe(ok)
    expect(reply("PTTL", "exat")).toBe(":20000\r\n")
    expect(reply("SET", "pxat", "v", "pxat", String(start + 2_500))).toBe(ok)
    expect(reply("PTTL", "pxat")).toBe(":2500\r\n")
    expect(reply("SET", "lower", "v", "ex", "5")).toBe(ok)
    expect(reply("TTL", "lower")).toBe(":5\r\n")
    advance(1_501)
    expect(reply("GET", "px")).toBe(nil)
    expect(reply("GET", "pxat")).toBe("$1\r\nv\r\n")
    advance(1_000)
    expect(reply("GET", "pxat")).toBe(nil)
    expect(reply("PTTL", "exat")).toBe(":17499\r\n")
  })

  it("SET NX sets only a missing key, XX only an existing one; otherwise nil and nothing changes", () => {
    const { reply } = session()
    expect(reply("SET", "k", "v", "XX")).toBe(nil)
    expect(reply("GET", "k")).toBe(nil)
    expect(reply("SET", "k", "v", "NX")).toBe(ok)
    expect(reply("SET", "k", "w", "NX")).toBe(nil)
    expect(reply("GET", "k")).toBe("$1\r\nv\r\n")
    expect(reply("SET", "k", "w", "xx")).toBe(ok)
    expect(reply("GET", "k")).toBe("$1\r\nw\r\n")
  })

  it("SET NX on a key past its deadline sets it", () => {
    const { advance, reply } = session()
    expect(reply("SET", "k", "old", "PX", "100")).toBe(ok)
    advance(101)
    expect(reply("SET", "k", "new", "NX")).toBe(ok)
    expect(reply("GET", "k")).toBe("$3\r\nnew\r\n")
    expect(reply("PTTL", "k")).toBe(":-1\r\n")
  })

  it("SET GET answers the old value (nil when there was none), also when NX or XX leave the key alone", () => {
    const { reply } = session()
    expect(reply("SET", "k", "v1", "GET")).toBe(nil)
    expect(reply("GET", "k")).toBe("$2\r\nv1\r\n")
    expect(reply("SET", "k", "v2", "GET")).toBe("$2\r\nv1\r\n")
    expect(reply("GET", "k")).toBe("$2\r\nv2\r\n")
    expect(reply("SET", "k", "v3", "NX", "GET")).toBe("$2\r\nv2\r\n")
    expect(reply("GET", "k")).toBe("$2\r\nv2\r\n")
    expect(reply("SET", "missing", "x", "XX", "GET")).toBe(nil)
    expect(reply("GET", "missing")).toBe(nil)
  })

  it("SET KEEPTTL keeps the deadline; a plain SET clears it", () => {
    const { advance, reply } = session()
    expect(reply("SET", "k", "v", "EX", "100")).toBe(ok)
    advance(30_000)
    expect(reply("SET", "k", "w", "KEEPTTL")).toBe(ok)
    expect(reply("GET", "k")).toBe("$1\r\nw\r\n")
    expect(reply("PTTL", "k")).toBe(":70000\r\n")
    expect(reply("SET", "k", "x")).toBe(ok)
    expect(reply("PTTL", "k")).toBe(":-1\r\n")
    expect(reply("SET", "k", "y", "KEEPTTL")).toBe(ok)
    expect(reply("PTTL", "k")).toBe(":-1\r\n")
    expect(reply("SET", "fresh", "v", "KEEPTTL")).toBe(ok)
    expect(reply("PTTL", "fresh")).toBe(":-1\r\n")
  })

  it("SET with an expire time of zero or less, or not an integer, is an error, and nothing is set", () => {
    const { reply } = session()
    const invalid = "-ERR invalid expire time in 'set' command\r\n"
    expect(reply("SET", "k", "v", "EX", "0")).toBe(invalid)
    expect(reply("SET", "k", "v", "PX", "0")).toBe(invalid)
    expect(reply("SET", "k", "v", "EX", "-5")).toBe(invalid)
    expect(reply("SET", "k", "v", "EXAT", "0")).toBe(invalid)
    expect(reply("SET", "k", "v", "EX", "abc")).toBe(notInteger)
    expect(reply("SET", "k", "v", "PX", "1.5")).toBe(notInteger)
    expect(reply("SET", "k", "v", "EX", "01")).toBe(notInteger)
    expect(reply("SET", "k", "v", "EX", "")).toBe(notInteger)
    expect(reply("GET", "k")).toBe(nil)
  })

  it("SET with conflicting, unknown or incomplete options is a syntax error, and nothing is set", () => {
    const { reply } = session()
    expect(reply("SET", "k", "v", "NX", "XX")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "XX", "NX")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "EX", "10", "PX", "10")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "PX", "10", "EXAT", "10")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "KEEPTTL", "EX", "10")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "EX", "10", "KEEPTTL")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "EX")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "FOO")).toBe(syntaxError)
    expect(reply("GET", "k")).toBe(nil)
  })
})

// ---------------------------------------------------------------------------------------------------------
// DEL, EXISTS and INCR

describe("DEL, EXISTS and INCR", () => {
  it("DEL counts the keys it removed; EXISTS counts the keys that exist, a key named twice twice", () => {
    const { reply } = session()
    expect(reply("SET", "a", "1")).toBe(ok)
    expect(reply("SET", "b", "2")).toBe(ok)
    expect(reply("EXISTS", "a")).toBe(":1\r\n")
    expect(reply("EXISTS", "a", "a", "b", "c")).toBe(":3\r\n")
    expect(reply("DEL", "a", "b", "c")).toBe(":2\r\n")
    expect(reply("DEL", "a")).toBe(":0\r\n")
    expect(reply("EXISTS", "a", "b")).toBe(":0\r\n")
    expect(reply("DEL")).toBe(arity("del"))
    expect(reply("EXISTS")).toBe(arity("exists"))
  })

  it("a key past its deadline neither exists nor is deleted", () => {
    const { advance, reply } = session()
    expect(reply("SET", "a", "1", "PX", "10")).toBe(ok)
    expect(reply("SET", "b", "2", "PX", "10")).toBe(ok)
    advance(11)
    expect(reply("EXISTS", "a")).toBe(":0\r\n")
    expect(reply("DEL", "b")).toBe(":0\r\n")
  })

  it("INCR counts an absent key from 0 and stores the result as a string", () => {
    const { reply } = session()
    expect(reply("INCR", "n")).toBe(":1\r\n")
    expect(reply("INCR", "n")).toBe(":2\r\n")
    expect(reply("GET", "n")).toBe("$1\r\n2\r\n")
    expect(reply("SET", "m", "-1")).toBe(ok)
    expect(reply("INCR", "m")).toBe(":0\r\n")
    expect(reply("SET", "big", "9007199254740990")).toBe(ok)
    expect(reply("INCR", "big")).toBe(":9007199254740991\r\n")
    expect(reply("INCR")).toBe(arity("incr"))
  })

  it("INCR on a value that is not an integer, or at 2^63 - 1, is an error and changes nothing", () => {
    const { reply } = session()
    expect(reply("SET", "s", "abc")).toBe(ok)
    expect(reply("INCR", "s")).toBe(notInteger)
    expect(reply("GET", "s")).toBe("$3\r\nabc\r\n")
    expect(reply("SET", "s", "1.5")).toBe(ok)
    expect(reply("INCR", "s")).toBe(notInteger)
    expect(reply("SET", "max", "9223372036854775807")).toBe(ok)
    expect(reply("INCR", "max")).toBe("-ERR increment or decrement would overflow\r\n")
    expect(reply("GET", "max")).toBe("$19\r\n9223372036854775807\r\n")
  })

  it("INCR keeps the deadline, and counts a key past its deadline from 0", () => {
    const { advance, reply } = session()
    expect(reply("SET", "n", "5", "EX", "100")).toBe(ok)
    expect(reply("INCR", "n")).toBe(":6\r\n")
    expect(reply("TTL", "n")).toBe(":100\r\n")
    advance(100_001)
    expect(reply("INCR", "n")).toBe(":1\r\n")
    expect(reply("TTL", "n")).toBe(":-1\r\n")
  })
})

// ---------------------------------------------------------------------------------------------------------
// EXPIRE, PEXPIRE, TTL and PTTL

describe("EXPIRE, PEXPIRE, TTL and PTTL", () => {
  it("TTL and PTTL are -2 for a missing key and -1 for a key without deadline", () => {
    const { reply } = session()
    expect(reply("TTL", "k")).toBe(":-2\r\n")
    expect(reply("PTTL", "k")).toBe(":-2\r\n")
    expect(reply("SET", "k", "v")).toBe(ok)
    expect(reply("TTL", "k")).toBe(":-1\r\n")
    expect(reply("PTTL", "k")).toBe(":-1\r\n")
    expect(reply("TTL")).toBe(arity("ttl"))
    expect(reply("PTTL", "a", "b")).toBe(arity("pttl"))
  })

  it("EXPIRE and PEXPIRE answer 1 when the key exists and 0 when it does not", () => {
    const { advance, reply } = session()
    expect(reply("EXPIRE", "k", "10")).toBe(":0\r\n")
    expect(reply("PEXPIRE", "k", "10")).toBe(":0\r\n")
    expect(reply("SET", "k", "v")).toBe(ok)
    expect(reply("EXPIRE", "k", "10")).toBe(":1\r\n")
    expect(reply("TTL", "k")).toBe(":10\r\n")
    expect(reply("PTTL", "k")).toBe(":10000\r\n")
    expect(reply("PEXPIRE", "k", "2500")).toBe(":1\r\n")
    expect(reply("PTTL", "k")).toBe(":2500\r\n")
    expect(reply("TTL", "k")).toBe(":3\r\n")
    advance(2_501)
    expect(reply("GET", "k")).toBe(nil)
    expect(reply("EXPIRE", "k", "10")).toBe(":0\r\n")
  })

  it("EXPIRE or PEXPIRE with a time of zero or less deletes the key and answers 1", () => {
    const { reply } = session()
    expect(reply("SET", "a", "1")).toBe(ok)
    expect(reply("SET", "b", "2")).toBe(ok)
    expect(reply("EXPIRE", "a", "-1")).toBe(":1\r\n")
    expect(reply("GET", "a")).toBe(nil)
    expect(reply("EXISTS", "a")).toBe(":0\r\n")
    expect(reply("PEXPIRE", "b", "0")).toBe(":1\r\n")
    expect(reply("TTL", "b")).toBe(":-2\r\n")
    expect(reply("DBSIZE")).toBe(":0\r\n")
  })

  it("EXPIRE and PEXPIRE with a time that is not an integer, or the wrong arity, are errors", () => {
    const { reply } = session()
    expect(reply("SET", "k", "v")).toBe(ok)
    expect(reply("EXPIRE", "k", "abc")).toBe(notInteger)
    expect(reply("PEXPIRE", "k", "1.5")).toBe(notInteger)
    expect(reply("PTTL", "k")).toBe(":-1\r\n")
    expect(reply("EXPIRE", "k")).toBe(arity("expire"))
    expect(reply("PEXPIRE")).toBe(arity("pexpire"))
  })
})

// ---------------------------------------------------------------------------------------------------------
// DBSIZE and FLUSHDB

describe("DBSIZE and FLUSHDB", () => {
  it("DBSIZE counts the keys held, including one past its deadline until it is touched", () => {
    const { advance, reply } = session()
    expect(reply("DBSIZE")).toBe(":0\r\n")
    expect(reply("SET", "a", "1")).toBe(ok)
    expect(reply("SET", "b", "2", "PX", "10")).toBe(ok)
    expect(reply("DBSIZE")).toBe(":2\r\n")
    advance(11)
    expect(reply("DBSIZE")).toBe(":2\r\n")
    expect(reply("GET", "b")).toBe(nil)
    expect(reply("DBSIZE")).toBe(":1\r\n")
    expect(reply("DBSIZE", "x")).toBe(arity("dbsize"))
  })

  it("FLUSHDB, FLUSHDB ASYNC and FLUSHDB SYNC empty the store; any other argument is a syntax error", () => {
    const { reply } = session()
    const fill = () => {
      expect(reply("SET", "a", "1")).toBe(ok)
      expect(reply("SET", "b", "2", "EX", "10")).toBe(ok)
      expect(reply("DBSIZE")).toBe(":2\r\n")
    }
    fill()
    expect(reply("FLUSHDB")).toBe(ok)
    expect(reply("DBSIZE")).toBe(":0\r\n")
    expect(reply("GET", "a")).toBe(nil)
    fill()
    expect(reply("FLUSHDB", "ASYNC")).toBe(ok)
    expect(reply("DBSIZE")).toBe(":0\r\n")
    fill()
    expect(reply("flushdb", "sync")).toBe(ok)
    expect(reply("DBSIZE")).toBe(":0\r\n")
    fill()
    expect(reply("FLUSHDB", "x")).toBe(syntaxError)
    expect(reply("FLUSHDB", "ASYNC", "x")).toBe(syntaxError)
    expect(reply("DBSIZE")).toBe(":2\r\n")
  })
})

// ---------------------------------------------------------------------------------------------------------
// Unknown commands and arity

describe("unknown commands and wrong arity", () => {
  it("an unknown command is named with the first arguments, each quoted and followed by a space", () => {
    const { reply } = session()
    expect(reply("foo", "a", "b")).toBe("-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n")
    expect(reply("foo")).toBe("-ERR unknown command 'foo', with args beginning with: \r\n")
    expect(reply("FOO", "")).toBe("-ERR unknown command 'FOO', with args beginning with: '' \r\n")
  })

  it("CR and LF in the name or the arguments become spaces", () => {
    const { reply } = session()
    expect(reply("foo", "a\r\nb", "c\nd")).toBe(
      "-ERR unknown command 'foo', with args beginning with: 'a  b' 'c d' \r\n"
    )
    expect(reply("fo\r\no")).toBe("-ERR unknown command 'fo  o', with args beginning with: \r\n")
  })

  it("the name is cut to 128 characters, and the arguments once their listing reaches 128", () => {
    const { reply } = session()
    const name = "n".repeat(200)
    expect(reply(name)).toBe(`-ERR unknown command '${"n".repeat(128)}', with args beginning with: \r\n`)
    const first = "a".repeat(100)
    expect(reply("foo", first, "b".repeat(100), "c")).toBe(
      `-ERR unknown command 'foo', with args beginning with: '${first}' '${"b".repeat(25)}' \r\n`
    )
  })

  it("names of Object.prototype members are unknown commands", () => {
    const { reply } = session()
    for (const name of ["constructor", "__proto__", "hasOwnProperty", "toString"]) {
      expect(reply(name)).toBe(`-ERR unknown command '${name}', with args beginning with: \r\n`)
    }
  })

  it("wrong arity names the command in lowercase, whatever case it was sent in", () => {
    const { reply } = session()
    expect(reply("GET")).toBe("-ERR wrong number of arguments for 'get' command\r\n")
    expect(reply("GET", "a", "b")).toBe("-ERR wrong number of arguments for 'get' command\r\n")
    expect(reply("Set", "k")).toBe("-ERR wrong number of arguments for 'set' command\r\n")
    expect(reply("CLIENT")).toBe("-ERR wrong number of arguments for 'client' command\r\n")
  })
})

// ---------------------------------------------------------------------------------------------------------
// QUIT, CLIENT and HELLO

describe("QUIT, CLIENT and HELLO", () => {
  it("QUIT answers OK and marks the connection as quitting", () => {
    const { connection, reply } = session()
    expect(connection.quitting).toBe(false)
    expect(reply("QUIT")).toBe(ok)
    expect(connection.quitting).toBe(true)
  })

  it("CLIENT SETNAME names the connection, GETNAME reads it, an empty name clears it", () => {
    const { connection, reply } = session()
    expect(reply("CLIENT", "GETNAME")).toBe(nil)
    expect(reply("CLIENT", "SETNAME", "worker-1")).toBe(ok)
    expect(connection.name?.toString()).toBe("worker-1")
    expect(reply("client", "getname")).toBe("$8\r\nworker-1\r\n")
    expect(reply("CLIENT", "SETNAME", "")).toBe(ok)
    expect(connection.name).toBeUndefined()
    expect(reply("CLIENT", "GETNAME")).toBe(nil)
  })

  it("CLIENT SETNAME with a space or a newline is an error and keeps the old name", () => {
    const { reply } = session()
    const invalid = "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    expect(reply("CLIENT", "SETNAME", "old")).toBe(ok)
    expect(reply("CLIENT", "SETNAME", "two words")).toBe(invalid)
    expect(reply("CLIENT", "SETNAME", "a\nb")).toBe(invalid)
    expect(reply("CLIENT", "GETNAME")).toBe("$3\r\nold\r\n")
  })

  it("CLIENT SETINFO answers OK; an unknown subcommand is an error pointing to CLIENT HELP", () => {
    const { reply } = session()
    expect(reply("CLIENT", "SETINFO", "lib-name", "x")).toBe(ok)
    expect(reply("CLIENT", "SETINFO", "lib-ver", "1.2.3")).toBe(ok)
    const unknown = reply("CLIENT", "FOO")
    expect(unknown).toMatch(/^-ERR unknown subcommand /)
    expect(unknown).toMatch(/'FOO'\. Try CLIENT HELP\.\r\n$/)
  })

  it("HELLO and HELLO 2 answer the server's fields as a flat array, with proto 2", () => {
    const { reply } = session()
    for (const hello of [reply("HELLO"), reply("HELLO", "2")]) {
      expect(hello).toMatch(/^\*\d+\r\n/)
      expect(hello).toContain(`${bulk("server")}${bulk("redis")}`)
      expect(hello).toContain(`${bulk("proto")}:2\r\n`)
      expect(hello).toContain(`${bulk("mode")}${bulk("standalone")}`)
      expect(hello).toContain(`${bulk("role")}${bulk("master")}`)
      expect(hello).toContain(`${bulk("modules")}*0\r\n`)
    }
  })

  it("HELLO with any other protocol version is NOPROTO; one that is not an integer is an error", () => {
    const { reply } = session()
    const noProto = "-NOPROTO sorry, this protocol version is not supported\r\n"
    expect(reply("HELLO", "3")).toBe(noProto)
    expect(reply("HELLO", "1")).toBe(noProto)
    expect(reply("HELLO", "4")).toBe(noProto)
    expect(reply("HELLO", "abc")).toBe("-ERR Protocol version is not an integer or out of range\r\n")
  })

  it("AUTH and HELLO … AUTH answer as a Redis without a password: the default user takes any password", () => {
    const { reply, connection } = session()
    const wrongPass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    expect(reply("AUTH", "default", "anything")).toBe(ok)
    expect(reply("AUTH", "someone", "anything")).toBe(wrongPass)
    expect(reply("AUTH", "secret")).toBe(
      "-ERR AUTH <password> called without any password configured for the default user. " +
        "Are you sure your configuration is correct?\r\n"
    )
    expect(reply("AUTH", "a", "b", "c")).toBe(syntaxError)
    expect(reply("AUTH")).toBe(arity("auth"))
    expect(reply("HELLO", "2", "AUTH", "someone", "x")).toBe(wrongPass)
    expect(reply("HELLO", "2", "AUTH", "default")).toBe("-ERR Syntax error in HELLO option 'AUTH'\r\n")
    expect(reply("HELLO", "2", "AUTH", "default", "x", "SETNAME", "worker")).toMatch(/^\*14\r\n\$6\r\nserver\r\n/)
    expect(String(connection.name)).toBe("worker")
  })
})

// ---------------------------------------------------------------------------------------------------------
// INFO and COMMAND

describe("INFO and COMMAND", () => {
  it("INFO answers a bulk string of CRLF-separated sections with the server's fields", () => {
    const { reply, run } = session()
    const encoded = reply("INFO")
    const body = bulkText(run("INFO"))
    expect(encoded).toBe(bulk(body))
    expect(body.endsWith("\r\n")).toBe(true)
    const lines = body.split("\r\n")
    expect(lines).toContain("# Server")
    expect(lines).toContain("redis_version:7.0.0")
    expect(lines).toContain("tcp_port:6379")
    expect(lines).toContain("uptime_in_seconds:42")
    expect(lines).toContain("connected_clients:3")
    expect(lines).toContain("loading:0")
    expect(lines).toContain("# Keyspace")
    expect(lines.some((line) => line.startsWith("db0:"))).toBe(false)
    expect(body.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
  })

  it("INFO's keyspace line counts the keys and those with a deadline", () => {
    const { reply, run } = session()
    expect(reply("SET", "k", "v", "EX", "100")).toBe(ok)
    const lines = bulkText(run("INFO")).split("\r\n")
    expect(lines.find((line) => line.startsWith("db0:"))).toMatch(/^db0:keys=1,expires=1(,|$)/)
    expect(reply("SET", "plain", "v")).toBe(ok)
    expect(bulkText(run("INFO", "keyspace"))).toMatch(/^# Keyspace\r\ndb0:keys=2,expires=1[,\r]/)
  })

  it("INFO keyspace with an empty store is only its header; section names in any case", () => {
    const { reply } = session()
    expect(reply("INFO", "keyspace")).toBe("$12\r\n# Keyspace\r\n\r\n")
    expect(reply("INFO", "KEYSPACE")).toBe("$12\r\n# Keyspace\r\n\r\n")
    const server = reply("INFO", "server")
    expect(server).toContain("# Server\r\n")
    expect(server).toContain("redis_version:7.0.0\r\n")
    expect(server).not.toContain("# Keyspace")
  })

  it("COMMAND DOCS answers an empty array; COMMAND COUNT an integer", () => {
    const { reply } = session()
    expect(reply("COMMAND", "DOCS")).toBe("*0\r\n")
    expect(reply("command", "docs")).toBe("*0\r\n")
    const count = reply("COMMAND", "COUNT")
    expect(count).toMatch(/^:\d+\r\n$/)
    expect(Number(count.slice(1, -2))).toBeGreaterThan(0)
  })
})

describe("Redis 7's finer points", () => {
  it("INCR keeps 64-bit precision; -0 is no integer; a key lives through its deadline instant", () => {
    const { reply, advance } = session()
    expect(reply("SET", "n", "9223372036854775806")).toBe(ok)
    expect(reply("INCR", "n")).toBe(":9223372036854775807\r\n")
    expect(reply("EXPIRE", "n", "-0")).toBe(notInteger)
    expect(reply("SET", "k", "v", "EX", "-0")).toBe(notInteger)
    expect(reply("SET", "k", "v", "PX", "100")).toBe(ok)
    advance(100)
    expect(reply("PTTL", "k")).toBe(":0\r\n")
    expect(reply("GET", "k")).toBe(bulk("v"))
    advance(1)
    expect(reply("GET", "k")).toBe(nil)
  })

  it("EXPIRE takes NX, XX, GT and LT; a deadline past int64 is an invalid expire time", () => {
    const { reply } = session()
    reply("SET", "k", "v")
    expect(reply("EXPIRE", "k", "100", "XX")).toBe(":0\r\n")
    expect(reply("EXPIRE", "k", "100", "NX")).toBe(":1\r\n")
    expect(reply("EXPIRE", "k", "200", "NX")).toBe(":0\r\n")
    expect(reply("EXPIRE", "k", "50", "GT")).toBe(":0\r\n")
    expect(reply("EXPIRE", "k", "200", "GT")).toBe(":1\r\n")
    expect(reply("EXPIRE", "k", "150", "LT")).toBe(":1\r\n")
    expect(reply("TTL", "k")).toBe(":150\r\n")
    expect(reply("EXPIRE", "k", "10", "NX", "XX")).toBe(
      "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    )
    expect(reply("EXPIRE", "k", "10", "FOO")).toBe("-ERR Unsupported option FOO\r\n")
    expect(reply("EXPIRE", "k", "9223372036854775807")).toBe("-ERR invalid expire time in 'expire' command\r\n")
    expect(reply("SET", "k", "v", "PX", "9223372036854775807")).toBe("-ERR invalid expire time in 'set' command\r\n")
    expect(reply("PEXPIRE", "k", "9007199254740000")).toBe(":1\r\n")
  })

  it("SET accepts a repeated option and checks every option before the expire time", () => {
    const { reply } = session()
    expect(reply("SET", "k", "v", "NX", "NX")).toBe(ok)
    expect(reply("SET", "k", "v", "EX", "10", "EX", "20")).toBe(ok)
    expect(reply("TTL", "k")).toBe(":20\r\n")
    expect(reply("SET", "k", "w", "GET", "GET")).toBe(bulk("v"))
    expect(reply("SET", "k", "v", "EX", "abc", "NX", "XX")).toBe(syntaxError)
    expect(reply("SET", "k", "v", "EX", "0", "foo")).toBe(syntaxError)
  })

  it("CLIENT words its errors as Redis 7 does and accepts only printable names and attributes", () => {
    const { reply } = session()
    expect(reply("CLIENT", "FOO")).toBe("-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n")
    expect(reply("CLIENT", "GETNAME", "x")).toBe(arity("client|getname"))
    expect(reply("CLIENT", "SETNAME")).toBe(arity("client|setname"))
    expect(reply("CLIENT", "SETNAME", "a\x01b")).toBe(
      "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    )
    expect(reply("CLIENT", "SETINFO", "foo", "x")).toBe("-ERR Unrecognized option 'foo'\r\n")
    expect(reply("CLIENT", "SETINFO", "lib-name", "a b")).toBe(
      "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"
    )
  })

  it("HELLO answers the connection's id and takes SETNAME; INFO of an unknown section is empty", () => {
    const { reply, run, connection } = session()
    const hello = run("HELLO", "2", "SETNAME", "worker")
    expect(wire(hello)).toContain("$2\r\nid\r\n:1\r\n")
    expect(connection.name?.toString()).toBe("worker")
    expect(reply("INFO", "foo")).toBe("$0\r\n\r\n")
  })
})

describe("RESET", () => {
  it("leaves subscribed mode and forgets the name", () => {
    const { reply, connection } = session()
    expect(reply("CLIENT", "SETNAME", "worker")).toBe(ok)
    expect(reply("SUBSCRIBE", "a")).toBe("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    expect(reply("GET", "k")).toMatch(/^-ERR Can't execute 'get'/)
    expect(reply("RESET")).toBe("+RESET\r\n")
    expect(reply("GET", "k")).toBe(nil)
    expect(connection.name).toBeUndefined()
    expect(connection.subscriber.channels.size).toBe(0)
  })
})

describe("names that are also JavaScript's", () => {
  it("INFO constructor is an unknown section and CLIENT constructor an unknown subcommand", () => {
    const { reply } = session()
    expect(reply("INFO", "constructor")).toBe("$0\r\n\r\n")
    expect(reply("INFO", "__proto__")).toBe("$0\r\n\r\n")
    expect(reply("CLIENT", "constructor")).toBe("-ERR unknown subcommand 'constructor'. Try CLIENT HELP.\r\n")
  })
})
