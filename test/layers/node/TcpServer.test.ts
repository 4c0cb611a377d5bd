/**
 * The TCP server on real sockets (127.0.0.1, a port the OS picks): echoing connections, the connection cap
 * with paused waiting sockets, refusal past `maxPending`, the drain started by the Lifecycle, and the
 * Lifecycle's deadline cutting a connection that does not end.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Layer, Logger, Scope } from "effect"
import { Lifecycle } from "keel"
import { TcpServer } from "keel/node"
import * as Net from "node:net"
import { internalsOf } from "../../../src/internal/lifecycle.js"
import { eventually } from "../../support/eventually.js"


/** Starts a Lifecycle and the server in the current Scope. */
const start = (
  options: TcpServer.Options,
  handle: (connection: TcpServer.Connection) => Effect.Effect<void>,
  lifecycleOptions: Lifecycle.Options = {}
) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      Lifecycle.layer({ drainTimeout: "5 seconds", preStopDelay: 0, ...lifecycleOptions })
    ).pipe(Effect.orDie)
    const lifecycle = yield* Effect.provide(Lifecycle.Lifecycle, context)
    const server = yield* TcpServer.serve({ port: 0, ...options }, handle).pipe(Effect.provide(context), Effect.orDie)
    return { server, lifecycle }
  })

/** Completes when the socket has closed. */
const closed = (socket: Net.Socket) =>
  Effect.async<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    socket.once("close", () => resume(Effect.void))
  })

/** Writes back every chunk until the client closes the connection. */
const echo = (connection: TcpServer.Connection) =>
  Effect.async<void>((resume) => {
    connection.socket.on("error", () => {})
    connection.socket.on("data", (chunk) => connection.socket.write(chunk))
    connection.socket.on("close", () => resume(Effect.void))
  })

/** Echoes, and ends the connection when the server drains. */
const drainingEcho = (connection: TcpServer.Connection) =>
  Effect.raceFirst(
    echo(connection),
    connection.draining.pipe(
      Effect.zipRight(Effect.sync(() => connection.socket.end())),
      Effect.zipRight(closed(connection.socket))
    )
  )

interface Client {
  readonly socket: Net.Socket
  readonly received: () => string
  readonly connected: () => boolean
  /** The server ended the connection (`end`), or the socket closed. */
  readonly ended: () => boolean
  readonly closed: () => boolean
  readonly error: () => string | undefined
}

/** Opens a socket to the server, closed with the current Scope; it may not be connected yet. */
const open = (port: number) =>
  Effect.acquireRelease(
    Effect.sync((): Client => {
      const socket = Net.connect({ port, host: "127.0.0.1" })
      socket.setEncoding("utf8")
      let data = ""
      let connected = false
      let ended = false
      let isClosed = false
      let error: string | undefined
      socket.on("data", (chunk: string) => (data += chunk))
      socket.on("connect", () => (connected = true))
      socket.on("end", () => (ended = true))
      socket.on("close", () => (isClosed = true))
      socket.on("error", (cause: NodeJS.ErrnoException) => (error = cause.code ?? cause.message))
      return {
        socket,
        received: () => data,
        connected: () => connected,
        ended: () => ended || isClosed,
        closed: () => isClosed,
        error: () => error
      }
    }),
    (client) => Effect.sync(() => client.socket.destroy())
  )

/** Opens a socket and waits until the TCP connection is established. */
const connect = (port: number) =>
  Effect.tap(open(port), (client) => eventually(Effect.sync(client.connected), (connected) => connected))

/** Sends `text` and waits until the whole of it has come back. */
const roundTrip = (client: Client, text: string) =>
  Effect.gen(function*() {
    const before = client.received()
    client.socket.write(text)
    yield* eventually(Effect.sync(client.received), (received) => received === before + text)
  })

describe("TcpServer", () => {
  it.scopedLive("serves connections: each client gets its own bytes back, and stats count them", () =>
    Effect.gen(function*() {
      const { server } = yield* start({}, drainingEcho)
      expect(server.address.host).toBe("127.0.0.1")
      expect(server.address.port).toBeGreaterThan(0)

      const first = yield* connect(server.address.port)
      const second = yield* connect(server.address.port)
      yield* roundTrip(first, "hello from one")
      yield* roundTrip(second, "hello from two")
      yield* roundTrip(first, ", again")
      expect(first.received()).toBe("hello from one, again")
      expect(second.received()).toBe("hello from two")

      const busy = yield* server.stats
      expect(busy).toEqual({ accepting: true, connections: 2, pending: 0, refused: 0, served: 0, acceptErrors: 0 })

      first.socket.end()
      second.socket.end()
      const idle = yield* eventually(server.stats, (stats) => stats.connections === 0 && stats.served === 2)
      expect(idle).toEqual({ accepting: true, connections: 0, pending: 0, refused: 0, served: 2, acceptErrors: 0 })
    }))

  it.scopedLive("past maxConnections a client waits unread until a connection ends", () =>
    Effect.gen(function*() {
      const { server } = yield* start({ maxConnections: 2 }, drainingEcho)
      const port = server.address.port
      const first = yield* connect(port)
      const second = yield* connect(port)
      yield* roundTrip(first, "one")
      yield* roundTrip(second, "two")

      const third = yield* connect(port)
      third.socket.write("three")
      yield* eventually(server.stats, (stats) => stats.pending === 1)
      yield* Effect.sleep("200 millis")
      expect(third.received()).toBe("")
      expect(third.ended()).toBe(false)
      expect(yield* server.stats).toMatchObject({ connections: 2, pending: 1, refused: 0 })

      first.socket.end()
      yield* eventually(Effect.sync(third.received), (received) => received === "three")
      const stats = yield* eventually(server.stats, (stats) => stats.pending === 0 && stats.served === 1)
      expect(stats).toMatchObject({ connections: 2, pending: 0, refused: 0, served: 1 })
      yield* roundTrip(second, " still served")
      yield* roundTrip(third, " and more")
    }))

  it.scopedLive("with the default cap of 250 the 251st client waits until one of the first 250 leaves", () =>
    Effect.gen(function*() {
      const { server } = yield* start({}, drainingEcho)
      const port = server.address.port
      const first = yield* Effect.forEach(Array.from({ length: 250 }), () => connect(port), { concurrency: 25 })
      yield* eventually(server.stats, (stats) => stats.connections === 250)
      const last = yield* connect(port)
      last.socket.write("251st")
      yield* eventually(server.stats, (stats) => stats.pending === 1)
      yield* Effect.sleep("200 millis")
      expect(last.received()).toBe("")
      first[0]!.socket.end()
      yield* eventually(Effect.sync(last.received), (received) => received === "251st")
      expect(yield* server.stats).toMatchObject({ connections: 250, pending: 0, refused: 0 })
    }))

  it.scopedLive("a waiting client that gives up leaves the queue and never takes a slot", () =>
    Effect.gen(function*() {
      const { server } = yield* start({ maxConnections: 1 }, drainingEcho)
      const port = server.address.port
      const first = yield* connect(port)
      yield* roundTrip(first, "one")
      const quitter = yield* connect(port)
      yield* eventually(server.stats, (stats) => stats.pending === 1)
      quitter.socket.end()
      yield* eventually(server.stats, (stats) => stats.pending === 0)

      first.socket.end()
      const stats = yield* eventually(server.stats, (stats) => stats.connections === 0 && stats.served === 1)
      expect(stats).toMatchObject({ pending: 0, refused: 0, served: 1 })
      const next = yield* connect(port)
      yield* roundTrip(next, "next")
    }))

  it.scopedLive("past maxPending a newcomer is closed at once and counted as refused", () =>
    Effect.gen(function*() {
      const { server } = yield* start({ maxConnections: 1, maxPending: 1 }, drainingEcho)
      const port = server.address.port
      const served = yield* connect(port)
      yield* roundTrip(served, "served")
      const waiting = yield* connect(port)
      yield* eventually(server.stats, (stats) => stats.pending === 1)

      const refused = yield* open(port)
      yield* eventually(Effect.sync(refused.ended), (ended) => ended)
      yield* eventually(Effect.sync(refused.closed), (isClosed) => isClosed)
      expect(refused.received()).toBe("")
      expect(yield* server.stats).toMatchObject({ connections: 1, pending: 1, refused: 1 })
      expect(waiting.ended()).toBe(false)
      yield* roundTrip(served, " still")
    }))

  it.scopedLive("on the Lifecycle's shutdown the listener closes and draining connections end", () =>
    Effect.gen(function*() {
      const { server, lifecycle } = yield* start({}, drainingEcho)
      const port = server.address.port
      const client = yield* connect(port)
      yield* roundTrip(client, "before")

      yield* lifecycle.shutdown("test")
      yield* eventually(Effect.sync(client.ended), (ended) => ended)
      yield* eventually(Effect.sync(client.closed), (isClosed) => isClosed)
      expect(client.received()).toBe("before")
      const stats = yield* eventually(server.stats, (stats) => stats.connections === 0)
      expect(stats).toMatchObject({ accepting: false, connections: 0, pending: 0, served: 1 })

      const late = yield* open(port)
      yield* eventually(Effect.sync(late.closed), (isClosed) => isClosed)
      expect(late.received()).toBe("")
      expect(yield* server.stats).toMatchObject({ accepting: false, connections: 0, served: 1 })
    }))

  it.scopedLive("at the Lifecycle's deadline a connection that does not end is interrupted and its socket destroyed", () =>
    Effect.gen(function*() {
      const outer = yield* Effect.scope
      let interrupted = false
      const stubborn = (connection: TcpServer.Connection) =>
        echo(connection).pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
      let client: Client | undefined
      let lifecycle: Lifecycle.LifecycleService | undefined
      let shutdownAt = 0

      yield* Effect.scoped(Effect.gen(function*() {
        const started = yield* start({ name: "stubborn" }, stubborn, { drainTimeout: "400 millis", forceGrace: "100 millis" })
        lifecycle = started.lifecycle
        client = yield* Scope.extend(connect(started.server.address.port), outer)
        yield* roundTrip(client, "ping")
        shutdownAt = yield* Clock.currentTimeMillis
        yield* started.lifecycle.shutdown("test")
        const stats = yield* eventually(started.server.stats, (stats) => !stats.accepting)
        expect(stats.connections).toBe(1)
      })).pipe(Effect.disconnect, Effect.timeout("3 seconds"), Effect.orDie)

      // Cut at 300 ms (the 400 ms deadline less its 100 ms of grace), not before.
      const stoppedAt = yield* Clock.currentTimeMillis
      expect(stoppedAt - shutdownAt).toBeGreaterThanOrEqual(250)
      expect(interrupted).toBe(true)
      yield* eventually(Effect.sync(client!.closed), (isClosed) => isClosed)
      const reports = yield* (yield* internalsOf(lifecycle!)).drainReports
      expect(reports).toEqual([
        expect.objectContaining({ component: "stubborn", finished: 0, forced: 1, unfinished: [expect.stringMatching(/^stubborn: connection from /)] })
      ])
    }))

  it.scopedLive("an accept error closes the listener for the backoff's delay, doubling while errors repeat", () =>
    Effect.gen(function*() {
      const warnings: Array<string> = []
      const capture = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message[0] : message))
      })
      let listener: Net.Server | undefined
      const { server } = yield* start(
        { acceptBackoff: { base: "100 millis", max: "400 millis", jitter: "none" } },
        (connection) => {
          // The listening server, as Node sets it on the sockets it accepts.
          listener = (connection.socket as unknown as { readonly server: Net.Server }).server
          return drainingEcho(connection)
        }
      ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
      const port = server.address.port
      const first = yield* connect(port)
      yield* roundTrip(first, "before")
      const netServer = listener!
      // What Node emits where libuv reports a failed accept (see the module's opening comment).
      const failAccept = () =>
        netServer.emit("error", Object.assign(new Error("accept ENOBUFS"), { code: "ENOBUFS", syscall: "accept" }))
      const listeningAgain = eventually(Effect.sync(() => netServer.listening), (listening) => listening)

      failAccept()
      expect(netServer.listening).toBe(false)
      const refused = yield* open(port)
      yield* eventually(Effect.sync(refused.error), (error) => error === "ECONNREFUSED")
      yield* roundTrip(first, ", still served")
      yield* listeningAgain
      // Failures in a row, with no connection accepted between them, wait longer each time up to the cap.
      for (let failure = 2; failure <= 4; failure++) {
        failAccept()
        yield* listeningAgain
      }
      expect(warnings).toEqual([100, 200, 400, 400].map((ms) =>
        `tcp: accept failed (accept ENOBUFS); listening again in ${ms}ms`
      ))
      expect(yield* server.stats).toMatchObject({ accepting: true, acceptErrors: 4 })

      // An accepted connection ends the run: the next failure waits the base delay again.
      const second = yield* connect(port)
      yield* roundTrip(second, "after")
      failAccept()
      yield* listeningAgain
      expect(warnings.at(-1)).toBe("tcp: accept failed (accept ENOBUFS); listening again in 100ms")
      yield* roundTrip(first, " and after")
    }))
})
