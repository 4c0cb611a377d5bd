/**
 * Publish/subscribe in mini-redis: `globMatch` against Redis's stringmatchlen, then a server started in
 * this process (127.0.0.1, a port the OS picks) talked to over raw sockets and ioredis — SUBSCRIBE,
 * PSUBSCRIBE, PUBLISH and UNSUBSCRIBE replies byte for byte, the commands a subscribed connection may send,
 * and a subscriber that stops reading being cut off at its output limit while the others carry on.
 * Every wait is bounded.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { Lifecycle } from "keel"
import * as Net from "node:net"
import { globMatch } from "../../../examples/mini-redis/pubsub.js"
import * as Resp from "../../../examples/mini-redis/resp.js"
import { make } from "../../../examples/mini-redis/server.js"
import { eventually } from "../../support/eventually.js"

const host = "127.0.0.1"
const subscriberOutputLimit = 64 * 1024

/** Starts a Lifecycle and mini-redis in the current Scope; returns the port it listens on. */
const start = Effect.gen(function*() {
  const context = yield* Layer.build(Lifecycle.layer({ drainTimeout: "2 seconds", preStopDelay: 0 })).pipe(
    Effect.orDie
  )
  const server = yield* make({ port: 0, subscriberOutputLimit }).pipe(Effect.provide(context), Effect.orDie)
  return server.address.port
})

interface Client {
  readonly socket: Net.Socket
  /** Everything received so far, as latin1 text. */
  readonly received: () => string
  readonly receivedBytes: () => number
  readonly closed: () => boolean
}

/** A raw socket to the server, connected, destroyed with the current Scope. */
const connect = (port: number) =>
  Effect.acquireRelease(
    Effect.sync((): Client & { readonly connected: () => boolean } => {
      const socket = Net.connect({ host, port })
      const chunks: Array<Buffer> = []
      let bytes = 0
      let connected = false
      let isClosed = false
      socket.on("data", (chunk: Buffer) => {
        chunks.push(chunk)
        bytes += chunk.length
      })
      socket.on("connect", () => (connected = true))
      socket.on("close", () => (isClosed = true))
      socket.on("error", () => {})
      return {
        socket,
        received: () => {
          if (chunks.length > 1) chunks.splice(0, chunks.length, Buffer.concat(chunks))
          return chunks[0]?.toString("latin1") ?? ""
        },
        receivedBytes: () => bytes,
        connected: () => connected,
        closed: () => isClosed
      }
    }),
    (client) => Effect.sync(() => client.socket.destroy())
  ).pipe(Effect.tap((client) => eventually(Effect.sync(client.connected), (connected) => connected)))

/** Sends a command and returns exactly the next `expected.length` bytes that come back. */
const send = (client: Client, args: ReadonlyArray<string | Buffer>, expected: string) =>
  Effect.gen(function*() {
    const before = client.received().length
    client.socket.write(Resp.encodeCommand(args))
    yield* eventually(Effect.sync(client.receivedBytes), (bytes) => bytes >= before + expected.length)
    return client.received().slice(before)
  })

/** Waits until `expected` has arrived after what the client had received at `from`, and nothing more. */
const expectArrived = (client: Client, from: number, expected: string) =>
  Effect.gen(function*() {
    yield* eventually(Effect.sync(client.receivedBytes), (bytes) => bytes >= from + expected.length)
    expect(client.received().slice(from)).toBe(expected)
  })

/** A promise, bounded: dies if it does not settle within `ms`. */
const bounded = <A>(what: string, ms: number, promise: () => Promise<A>) =>
  Effect.tryPromise(promise).pipe(
    Effect.timeoutFail({ duration: `${ms} millis`, onTimeout: () => new Error(`${what}: nothing within ${ms} ms`) }),
    Effect.orDie
  )

/** An ioredis client, ready, disconnected with the current Scope. */
const redis = (port: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const client = new Redis({ host, port, maxRetriesPerRequest: 1, retryStrategy: () => null })
      client.on("error", () => {})
      return client
    }),
    (client) => Effect.sync(() => client.disconnect())
  ).pipe(
    Effect.tap((client) =>
      bounded("ioredis ready", 5_000, () =>
        new Promise<void>((resolve) => {
          if (client.status === "ready") resolve()
          else client.once("ready", () => resolve())
        }))
    )
  )

const subscribeReply = (kind: string, name: string, count: number) =>
  `*3\r\n$${kind.length}\r\n${kind}\r\n$${name.length}\r\n${name}\r\n:${count}\r\n`

const messageFrame = (channel: string, payload: string) =>
  `*3\r\n$7\r\nmessage\r\n$${channel.length}\r\n${channel}\r\n$${payload.length}\r\n${payload}\r\n`

const pmessageFrame = (pattern: string, channel: string, payload: string) =>
  `*4\r\n$8\r\npmessage\r\n$${pattern.length}\r\n${pattern}\r\n$${channel.length}\r\n${channel}\r\n$${payload.length}\r\n${payload}\r\n`

describe("globMatch", () => {
  it("`*` matches any run of characters, the empty one included", () => {
    expect(globMatch("*", "")).toBe(true)
    expect(globMatch("*", "anything at all")).toBe(true)
    expect(globMatch("h*llo", "hllo")).toBe(true)
    expect(globMatch("h*llo", "heeeello")).toBe(true)
    expect(globMatch("h*llo", "hello!")).toBe(false)
    expect(globMatch("a**b", "axyzb")).toBe(true)
    expect(globMatch("*b*", "abc")).toBe(true)
    expect(globMatch("*b*", "ac")).toBe(false)
  })

  it("`?` matches exactly one character", () => {
    expect(globMatch("h?llo", "hello")).toBe(true)
    expect(globMatch("h?llo", "hallo")).toBe(true)
    expect(globMatch("h?llo", "hllo")).toBe(false)
    expect(globMatch("h?llo", "heello")).toBe(false)
    expect(globMatch("?", "")).toBe(false)
  })

  it("`[ae]` matches one of the listed characters, `[^e]` one that is not listed", () => {
    expect(globMatch("h[ae]llo", "hello")).toBe(true)
    expect(globMatch("h[ae]llo", "hallo")).toBe(true)
    expect(globMatch("h[ae]llo", "hillo")).toBe(false)
    expect(globMatch("h[ae]llo", "hllo")).toBe(false)
    expect(globMatch("h[^e]llo", "hallo")).toBe(true)
    expect(globMatch("h[^e]llo", "hbllo")).toBe(true)
    expect(globMatch("h[^e]llo", "hello")).toBe(false)
    expect(globMatch("h[^e]llo", "hllo")).toBe(false)
  })

  it("`[a-c]` matches a range, whichever way round it is written", () => {
    expect(globMatch("h[a-c]llo", "hallo")).toBe(true)
    expect(globMatch("h[a-c]llo", "hbllo")).toBe(true)
    expect(globMatch("h[a-c]llo", "hcllo")).toBe(true)
    expect(globMatch("h[a-c]llo", "hdllo")).toBe(false)
    expect(globMatch("h[c-a]llo", "hbllo")).toBe(true)
    expect(globMatch("h[^a-c]llo", "hbllo")).toBe(false)
    expect(globMatch("h[^a-c]llo", "hdllo")).toBe(true)
  })

  it("a backslash makes the next character literal, in and out of brackets", () => {
    expect(globMatch("a\\*b", "a*b")).toBe(true)
    expect(globMatch("a\\*b", "axb")).toBe(false)
    expect(globMatch("a\\?b", "a?b")).toBe(true)
    expect(globMatch("a\\?b", "axb")).toBe(false)
    expect(globMatch("\\[x\\]", "[x]")).toBe(true)
    expect(globMatch("[\\]]", "]")).toBe(true)
    expect(globMatch("[\\]]", "x")).toBe(false)
  })

  it("`news.*` needs the dot: it matches news.x and news. but not news", () => {
    expect(globMatch("news.*", "news")).toBe(false)
    expect(globMatch("news.*", "news.")).toBe(true)
    expect(globMatch("news.*", "news.sport")).toBe(true)
    expect(globMatch("news.*", "newsXsport")).toBe(false)
    expect(globMatch("news", "news.sport")).toBe(false)
  })

  it("an empty pattern matches only the empty text, and only `*`s match the empty text", () => {
    expect(globMatch("", "")).toBe(true)
    expect(globMatch("", "a")).toBe(false)
    expect(globMatch("a", "")).toBe(false)
    expect(globMatch("**", "")).toBe(true)
  })

  it("a pattern with many stars against a long text that almost matches answers false", () => {
    const text = "a".repeat(10_000)
    expect(globMatch("*a*a*a*a*a*b", text)).toBe(false)
    expect(globMatch("*a*a*a*a*a*", text)).toBe(true)
    expect(globMatch("*a*a*a*a*a*b", `${text}b`)).toBe(true)
  })
})

describe("mini-redis pub/sub on the wire", () => {
  it.scopedLive("SUBSCRIBE answers each channel with the count; PUBLISH delivers and counts receivers", () =>
    Effect.gen(function*() {
      const port = yield* start
      const subscriber = yield* connect(port)
      const publisher = yield* connect(port)

      expect(yield* send(subscriber, ["SUBSCRIBE", "a", "b"], subscribeReply("subscribe", "a", 1) + subscribeReply("subscribe", "b", 2)))
        .toBe("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")

      const before = subscriber.receivedBytes()
      expect(yield* send(publisher, ["PUBLISH", "a", "hi"], ":1\r\n")).toBe(":1\r\n")
      yield* expectArrived(subscriber, before, "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")

      const afterFirst = subscriber.receivedBytes()
      expect(yield* send(publisher, ["PUBLISH", "b", "there"], ":1\r\n")).toBe(":1\r\n")
      expect(yield* send(publisher, ["PUBLISH", "c", "nobody"], ":0\r\n")).toBe(":0\r\n")
      yield* expectArrived(subscriber, afterFirst, messageFrame("b", "there"))

      // Subscribing again to a channel it has keeps the count.
      expect(yield* send(subscriber, ["SUBSCRIBE", "a"], subscribeReply("subscribe", "a", 2)))
        .toBe(subscribeReply("subscribe", "a", 2))
      expect(yield* send(publisher, ["PUBLISH", "a", "once"], ":1\r\n")).toBe(":1\r\n")
    }))

  it.scopedLive("PSUBSCRIBE delivers pmessage frames; PUBLISH counts every channel and pattern delivery", () =>
    Effect.gen(function*() {
      const port = yield* start
      const patterned = yield* connect(port)
      const both = yield* connect(port)
      const publisher = yield* connect(port)

      expect(yield* send(patterned, ["PSUBSCRIBE", "n.*"], "*3\r\n$10\r\npsubscribe\r\n$3\r\nn.*\r\n:1\r\n"))
        .toBe("*3\r\n$10\r\npsubscribe\r\n$3\r\nn.*\r\n:1\r\n")
      const start1 = patterned.receivedBytes()
      expect(yield* send(publisher, ["PUBLISH", "n.x", "m"], ":1\r\n")).toBe(":1\r\n")
      yield* expectArrived(patterned, start1, "*4\r\n$8\r\npmessage\r\n$3\r\nn.*\r\n$3\r\nn.x\r\n$1\r\nm\r\n")

      expect(yield* send(both, ["SUBSCRIBE", "n.x"], subscribeReply("subscribe", "n.x", 1)))
        .toBe(subscribeReply("subscribe", "n.x", 1))
      expect(yield* send(both, ["PSUBSCRIBE", "n.*", "n.?"], subscribeReply("psubscribe", "n.*", 2) + subscribeReply("psubscribe", "n.?", 3)))
        .toBe(subscribeReply("psubscribe", "n.*", 2) + subscribeReply("psubscribe", "n.?", 3))

      const start2 = patterned.receivedBytes()
      const startBoth = both.receivedBytes()
      // patterned: n.* ; both: the channel, n.* and n.?
      expect(yield* send(publisher, ["PUBLISH", "n.x", "m2"], ":4\r\n")).toBe(":4\r\n")
      yield* expectArrived(patterned, start2, pmessageFrame("n.*", "n.x", "m2"))
      yield* expectArrived(
        both,
        startBoth,
        messageFrame("n.x", "m2") + pmessageFrame("n.*", "n.x", "m2") + pmessageFrame("n.?", "n.x", "m2")
      )

      const start3 = patterned.receivedBytes()
      expect(yield* send(publisher, ["PUBLISH", "n.long", "m3"], ":2\r\n")).toBe(":2\r\n")
      expect(yield* send(publisher, ["PUBLISH", "news", "m4"], ":0\r\n")).toBe(":0\r\n")
      yield* expectArrived(patterned, start3, pmessageFrame("n.*", "n.long", "m3"))

      expect(yield* send(both, ["PUNSUBSCRIBE", "n.*"], subscribeReply("punsubscribe", "n.*", 2)))
        .toBe(subscribeReply("punsubscribe", "n.*", 2))
      expect(yield* send(publisher, ["PUBLISH", "n.x", "m5"], ":3\r\n")).toBe(":3\r\n")
    }))

  it.scopedLive("a subscribed connection may only (un)subscribe and PING until it unsubscribes from all", () =>
    Effect.gen(function*() {
      const port = yield* start
      const client = yield* connect(port)
      const publisher = yield* connect(port)

      yield* send(client, ["SUBSCRIBE", "a", "b"], subscribeReply("subscribe", "a", 1) + subscribeReply("subscribe", "b", 2))
      const refused = (name: string) =>
        `-ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n`
      expect(yield* send(client, ["GET", "k"], refused("get"))).toBe(refused("get"))
      expect(yield* send(client, ["SET", "k", "v"], refused("set"))).toBe(refused("set"))
      expect(yield* send(client, ["PUBLISH", "a", "x"], refused("publish"))).toBe(refused("publish"))
      expect(yield* send(client, ["PING"], "*2\r\n$4\r\npong\r\n$0\r\n\r\n")).toBe("*2\r\n$4\r\npong\r\n$0\r\n\r\n")
      expect(yield* send(client, ["PING", "hey"], "*2\r\n$4\r\npong\r\n$3\r\nhey\r\n")).toBe("*2\r\n$4\r\npong\r\n$3\r\nhey\r\n")

      const unsubscribed = subscribeReply("unsubscribe", "a", 1) + subscribeReply("unsubscribe", "b", 0)
      expect(yield* send(client, ["UNSUBSCRIBE"], unsubscribed)).toBe(unsubscribed)
      expect(yield* send(client, ["GET", "k"], "$-1\r\n")).toBe("$-1\r\n")
      expect(yield* send(client, ["PING"], "+PONG\r\n")).toBe("+PONG\r\n")
      expect(yield* send(publisher, ["PUBLISH", "a", "gone"], ":0\r\n")).toBe(":0\r\n")

      const nothing = "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
      expect(yield* send(client, ["UNSUBSCRIBE"], nothing)).toBe(nothing)
      const noPatterns = "*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"
      expect(yield* send(client, ["PUNSUBSCRIBE"], noPatterns)).toBe(noPatterns)

      // Channels and patterns count together; leaving the channels keeps the connection subscribed.
      yield* send(client, ["SUBSCRIBE", "c"], subscribeReply("subscribe", "c", 1))
      yield* send(client, ["PSUBSCRIBE", "p*"], subscribeReply("psubscribe", "p*", 2))
      expect(yield* send(client, ["UNSUBSCRIBE"], subscribeReply("unsubscribe", "c", 1)))
        .toBe(subscribeReply("unsubscribe", "c", 1))
      expect(yield* send(client, ["GET", "k"], refused("get"))).toBe(refused("get"))
      expect(yield* send(client, ["PUNSUBSCRIBE"], subscribeReply("punsubscribe", "p*", 0)))
        .toBe(subscribeReply("punsubscribe", "p*", 0))
      expect(yield* send(client, ["GET", "k"], "$-1\r\n")).toBe("$-1\r\n")
    }))

  it.scopedLive("QUIT is answered while subscribed, and closes the connection", () =>
    Effect.gen(function*() {
      const port = yield* start
      const client = yield* connect(port)
      const publisher = yield* connect(port)
      yield* send(client, ["SUBSCRIBE", "a"], subscribeReply("subscribe", "a", 1))
      expect(yield* send(client, ["QUIT"], "+OK\r\n")).toBe("+OK\r\n")
      yield* eventually(Effect.sync(client.closed), (isClosed) => isClosed)
      yield* eventually(send(publisher, ["PUBLISH", "a", "x"], ":0\r\n"), (reply) => reply === ":0\r\n")
    }))

  it.scopedLive("a subscriber that disconnects is no longer counted by PUBLISH", () =>
    Effect.gen(function*() {
      const port = yield* start
      const publisher = yield* connect(port)
      const leaving = yield* connect(port)
      const staying = yield* connect(port)
      yield* send(leaving, ["SUBSCRIBE", "ch"], subscribeReply("subscribe", "ch", 1))
      yield* send(leaving, ["PSUBSCRIBE", "c*"], subscribeReply("psubscribe", "c*", 2))
      yield* send(staying, ["SUBSCRIBE", "ch"], subscribeReply("subscribe", "ch", 1))
      expect(yield* send(publisher, ["PUBLISH", "ch", "x"], ":3\r\n")).toBe(":3\r\n")

      leaving.socket.destroy()
      yield* eventually(send(publisher, ["PUBLISH", "ch", "y"], ":1\r\n"), (reply) => reply === ":1\r\n")
    }))

  it.scopedLive("ioredis subscribers receive what another ioredis client publishes", () =>
    Effect.gen(function*() {
      const port = yield* start
      const subscriber = yield* redis(port)
      const publisher = yield* redis(port)
      const messages: Array<[string, string]> = []
      const pmessages: Array<[string, string, string]> = []
      subscriber.on("message", (channel: string, message: string) => messages.push([channel, message]))
      subscriber.on("pmessage", (pattern: string, channel: string, message: string) =>
        pmessages.push([pattern, channel, message]))

      expect(yield* bounded("SUBSCRIBE", 5_000, () => subscriber.subscribe("ch"))).toBe(1)
      expect(yield* bounded("PSUBSCRIBE", 5_000, () => subscriber.psubscribe("c?"))).toBe(2)
      expect(yield* bounded("PUBLISH", 5_000, () => publisher.publish("ch", "hello"))).toBe(2)
      expect(yield* bounded("PUBLISH", 5_000, () => publisher.publish("cx", "patterned"))).toBe(1)
      expect(yield* bounded("PUBLISH", 5_000, () => publisher.publish("other", "unheard"))).toBe(0)

      yield* eventually(Effect.sync(() => messages.length + pmessages.length), (count) => count >= 3)
      expect(messages).toEqual([["ch", "hello"]])
      expect(pmessages).toEqual([["c?", "ch", "hello"], ["c?", "cx", "patterned"]])

      yield* bounded("UNSUBSCRIBE", 5_000, () => subscriber.unsubscribe("ch"))
      yield* bounded("PUNSUBSCRIBE", 5_000, () => subscriber.punsubscribe("c?"))
      expect(yield* bounded("PUBLISH", 5_000, () => publisher.publish("ch", "late"))).toBe(0)
      expect(yield* bounded("SET", 5_000, () => subscriber.set("k", "v"))).toBe("OK")
      expect(yield* bounded("GET", 5_000, () => publisher.get("k"))).toBe("v")
    }))

  it.scopedLive("a subscriber that stops reading is disconnected at its output limit; the others carry on", () =>
    Effect.gen(function*() {
      const port = yield* start
      const publisher = yield* redis(port)
      const slow = yield* connect(port)
      const reader = yield* connect(port)
      yield* send(slow, ["SUBSCRIBE", "feed"], subscribeReply("subscribe", "feed", 1))
      slow.socket.pause()
      yield* send(reader, ["SUBSCRIBE", "feed"], subscribeReply("subscribe", "feed", 1))
      const readerStart = reader.receivedBytes()

      // Half the output limit, so that a subscriber that reads always has room for the next message.
      const payload = Buffer.alloc(subscriberOutputLimit / 2, "x")
      const frameLength = Resp.encode(Resp.array([Resp.bulk("message"), Resp.bulk("feed"), Resp.bulk(payload)])).length
      const maxMessages = 2_000
      const counts: Array<number> = []
      while (counts.length < maxMessages && !slow.closed()) {
        const receivers = yield* bounded("PUBLISH", 5_000, () => publisher.publish("feed", payload))
        counts.push(receivers)
        if (receivers < 2) break
      }

      // The loop ended because the slow subscriber was cut off, long before it ran out of messages.
      expect(counts.length).toBeLessThan(maxMessages)
      expect(counts[0]).toBe(2)
      expect(counts.at(-1)).toBe(1)
      const cutAt = counts.findIndex((count) => count < 2)
      expect(counts.slice(cutAt).every((count) => count === 1)).toBe(true)

      // The slow client, once it reads again, finds its connection closed by the server.
      slow.socket.resume()
      yield* eventually(Effect.sync(slow.closed), (isClosed) => isClosed)
      expect(slow.receivedBytes()).toBeLessThan(counts.length * frameLength)

      // The reader got every message, and keeps getting new ones.
      yield* eventually(Effect.sync(reader.receivedBytes), (bytes) => bytes >= readerStart + counts.length * frameLength)
      expect(reader.receivedBytes()).toBe(readerStart + counts.length * frameLength)
      const tail = reader.receivedBytes()
      expect(yield* bounded("PUBLISH", 5_000, () => publisher.publish("feed", "after"))).toBe(1)
      yield* expectArrived(reader, tail, messageFrame("feed", "after"))
      expect(reader.closed()).toBe(false)
      expect(yield* send(reader, ["PING"], "*2\r\n$4\r\npong\r\n$0\r\n\r\n")).toBe("*2\r\n$4\r\npong\r\n$0\r\n\r\n")
      expect(yield* bounded("PING", 5_000, () => publisher.ping())).toBe("PONG")
    }))
})
