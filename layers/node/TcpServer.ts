/**
 * A TCP server for Node with a connection cap, accept backoff and a drain, for protocol servers (mini-redis).
 *
 * mini-redis caps connections with a semaphore taken before `accept`, so the 251st client waits in the
 * kernel's backlog. Node accepts on its own, so here every socket is accepted paused (`pauseOnConnect`): up
 * to `maxConnections` are handed to the handler, and the next ones wait, unserved, in arrival order until a
 * connection ends (at most `maxPending` of them; past that a newcomer is closed at once). A waiting
 * connection is read ahead by at most 16 KiB, kept for its handler, so that one whose client gives up is
 * noticed and leaves the queue.
 *
 * Out of file descriptors, Node's libuv sheds load itself: it frees a descriptor it holds in reserve,
 * accepts every waiting connection and closes it, so clients see their connection closed and the process
 * carries on; any other accept error, libuv 1.46 on Linux retries on its next poll. Where a failed `accept`
 * does reach Node (the server's `error` event, syscall `accept`), the listener is stopped for a delay from a
 * Keel Backoff policy (1 s doubling to 64 s, as mini-redis does, reset by the next accepted connection) and
 * listens again, so a failing accept cannot turn into a busy loop.
 *
 * On the Lifecycle's drain (after the pre-stop delay) the listener closes, waiting sockets are closed
 * unserved, and every connection's `draining` completes: the handler finishes what it has read and ends
 * the connection at a frame boundary. The server's Scope closes once every connection has ended; at the
 * Lifecycle's deadline the rest are interrupted, their sockets destroyed, and listed in the shutdown report.
 */
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { Backoff, Lifecycle } from "keel"
import * as Net from "node:net"

/** Options of `serve`. */
export interface Options {
  /** The port to listen on. Default 0: a free port chosen by the system (read it from `address`). */
  readonly port?: number
  /** The address to listen on. Default `127.0.0.1` (this machine only; `0.0.0.0` listens on every interface). */
  readonly host?: string
  /** Names the server in the shutdown report and logs. Default `tcp`. */
  readonly name?: string
  /** Connections served at once. Default 250. */
  readonly maxConnections?: number
  /** Connections accepted past the cap that wait for a slot; past it a newcomer is closed. Default 1024. */
  readonly maxPending?: number
  /** Pause after a failed accept. Default 1 s doubling to 64 s, no jitter. */
  readonly acceptBackoff?: Backoff.Policy
}

/** One connection, as the handler gets it. */
export interface Connection {
  /** Numbered from 1, in the order connections are handed to the handler. */
  readonly id: number
  /**
   * The client's socket, flowing: read it with its `data` event, write to it. Bytes that arrived while the
   * connection waited for a slot are delivered first. It is destroyed when the handler returns.
   */
  readonly socket: Net.Socket
  /** Completes when the server starts draining: finish what was read, answer it, then end the connection. */
  readonly draining: Effect.Effect<void>
  /** Whether the server is draining, without waiting. */
  readonly isDraining: () => boolean
}

/** A snapshot of the server, read from `TcpServer.stats`. */
export interface Stats {
  /**
   * False once the drain has closed the listener for good; a listener paused after an accept error still
   * counts as accepting.
   */
  readonly accepting: boolean
  /** Connections being served now, at most `maxConnections`. */
  readonly connections: number
  /** Accepted past the cap, waiting for a slot. */
  readonly pending: number
  /** Closed at once because `maxPending` were already waiting. */
  readonly refused: number
  /** Connections served and ended since the start. */
  readonly served: number
  /** Failed accepts that paused the listener, since the start (failures during a pause are not counted). */
  readonly acceptErrors: number
}

/** The running server, returned by `serve`: where it listens and what it holds. */
export interface TcpServer {
  /** Where the server listens. */
  readonly address: {
    /** The address listened on, as given in `host`. */
    readonly host: string
    /** The port bound: the one chosen by the system when `port` was 0. */
    readonly port: number
  }
  /** The server's connections now, and its counts since the start. */
  readonly stats: Effect.Effect<Stats>
}

/** The server could not listen (port taken, address not available). */
export class ServeError extends Data.TaggedError("ServeError")<{
  /** `<name>: cannot listen on <host>:<port>: <Node's error message>`. */
  readonly message: string
}> {}

/** Bytes read ahead from a waiting connection (to notice it closing); past it, it is no longer read. */
const maxHeldPerPending = 16 * 1024

const defaultAcceptBackoff: Backoff.Policy = { base: "1 second", max: "64 seconds", jitter: "none" }

/**
 * Starts the server in the current Scope; `handle` runs once per connection, in a fiber of its own, and the
 * connection's socket is destroyed when it returns. Requires `Lifecycle` for the drain: closing the Scope
 * waits until every connection has ended, or until the Lifecycle's deadline, when the rest are interrupted
 * and reported. Fails with `ServeError` when it cannot listen.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TcpServer, runMain } from "keel/node"
 *
 * // Echoes what it reads until the client hangs up or the server drains.
 * const echo = ({ socket, draining }: TcpServer.Connection) =>
 *   Effect.raceFirst(
 *     Effect.async<void>((resume) => {
 *       socket.on("data", (chunk) => socket.write(chunk))
 *       socket.once("close", () => resume(Effect.void))
 *     }),
 *     draining
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const server = yield* TcpServer.serve({ port: 7000, maxConnections: 100 }, echo)
 *   yield* Effect.log(`listening on ${server.address.host}:${server.address.port}`)
 *   yield* Effect.never
 * }).pipe(Effect.scoped)
 *
 * runMain(program)
 * ```
 */
export const serve = (
  options: Options,
  handle: (connection: Connection) => Effect.Effect<void>
): Effect.Effect<TcpServer, ServeError, Scope.Scope | Lifecycle.Lifecycle> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const runtime = yield* Effect.runtime<never>()
    const name = options.name ?? "tcp"
    const maxConnections = options.maxConnections ?? 250
    const maxPending = options.maxPending ?? 1024
    const host = options.host ?? "127.0.0.1"
    const server = Net.createServer({ pauseOnConnect: true })

    const connections = new Map<Net.Socket, Fiber.RuntimeFiber<void>>()
    const pending: Array<{ readonly socket: Net.Socket; readonly handOver: () => void }> = []
    let nextId = 1
    let served = 0
    let refused = 0
    let acceptErrors = 0
    let consecutiveAcceptErrors = 0
    let accepting = true
    const draining = yield* Deferred.make<void>()
    const allEnded = yield* Deferred.make<void>()

    const checkAllEnded = () => {
      if (!accepting && connections.size === 0) Deferred.unsafeDone(allEnded, Exit.void)
    }

    const admit = (socket: Net.Socket) => {
      const connection: Connection = {
        id: nextId++,
        socket,
        draining: Deferred.await(draining),
        isDraining: () => !accepting
      }
      const fiber = Runtime.runFork(runtime)(handle(connection))
      connections.set(socket, fiber)
      fiber.addObserver(() => {
        connections.delete(socket)
        served++
        socket.destroy()
        const next = pending.shift()
        if (next !== undefined && accepting) {
          next.handOver()
          admit(next.socket)
        }
        checkAllEnded()
      })
      socket.resume()
    }

    server.on("connection", (socket: Net.Socket) => {
      consecutiveAcceptErrors = 0
      if (!accepting) return void socket.destroy()
      if (connections.size < maxConnections) return admit(socket)
      if (pending.length >= maxPending) {
        refused++
        return void socket.destroy()
      }
      // A waiting socket is read into a small buffer, handed over on admission, so that a client giving up
      // is noticed (a paused socket never sees its FIN) and leaves the queue.
      const held: Array<Buffer> = []
      let heldBytes = 0
      const hold = (chunk: Buffer) => {
        held.push(chunk)
        heldBytes += chunk.length
        if (heldBytes >= maxHeldPerPending) socket.pause()
      }
      pending.push({ socket, handOver: () => {
        socket.off("data", hold)
        socket.pause()
        if (held.length > 0) socket.unshift(Buffer.concat(held))
      } })
      socket.on("data", hold)
      socket.once("close", () => {
        const index = pending.findIndex((waiting) => waiting.socket === socket)
        if (index >= 0) pending.splice(index, 1)
      })
      socket.on("error", () => socket.destroy())
      socket.resume()
    })

    const port = options.port ?? 0
    // The port actually bound, once listening: a listener started again after an accept failure reuses it.
    let boundPort: number | undefined
    const listen = (onListening: () => void, onError: (error: Error) => void) => {
      server.once("error", onError)
      server.listen({ port: boundPort ?? port, host }, () => {
        server.off("error", onError)
        onListening()
      })
    }
    yield* Effect.async<void, ServeError>((resume) =>
      listen(
        () => resume(Effect.void),
        (cause) => resume(Effect.fail(new ServeError({ message: `${name}: cannot listen on ${host}:${port}: ${cause.message}` })))
      )
    )
    const bound = server.address()
    boundPort = typeof bound === "object" && bound !== null ? bound.port : port
    const address = { host, port: boundPort }

    // Accept failures: stop listening for a while, then listen again on the same port. The listener is
    // closed inside the error event itself: libuv retries a failed accept in a loop until its socket closes,
    // so waiting for even one turn of the event loop would spin the process.
    const acceptPolicy = options.acceptBackoff ?? defaultAcceptBackoff
    const pauseAccepting = (error: Error) =>
      Effect.gen(function*() {
        // The policy's delay for this many failures in a row (its cap once it would stop).
        const delays = yield* Backoff.delays(acceptPolicy, consecutiveAcceptErrors)
        const wait = delays.at(-1) ?? Duration.decode(acceptPolicy.max)
        yield* Effect.logWarning(`${name}: accept failed (${error.message}); listening again in ${Duration.format(wait)}`)
        yield* Effect.sleep(wait)
        if (!accepting) return
        yield* Effect.async<void>((resume) =>
          listen(() => resume(Effect.void), (cause) => {
            // Still failing: the next accept error (or this one) backs off further.
            void Runtime.runFork(runtime)(Effect.logWarning(`${name}: listening again failed: ${cause.message}`))
            resume(Effect.void)
          })
        )
      })
    let backingOff = false
    server.on("error", (error: NodeJS.ErrnoException) => {
      if (error.syscall !== "accept" || backingOff || !accepting) return
      backingOff = true
      acceptErrors++
      consecutiveAcceptErrors++
      Net.Server.prototype.close.call(server)
      Runtime.runFork(runtime)(Effect.ensuring(pauseAccepting(error), Effect.sync(() => (backingOff = false))))
    })

    const stopAccepting = Effect.sync(() => {
      if (!accepting) return
      accepting = false
      Net.Server.prototype.close.call(server)
      for (const waiting of pending.splice(0)) waiting.socket.destroy()
      Deferred.unsafeDone(draining, Exit.void)
      checkAllEnded()
    })

    // Connected clients and new connections are served through the pre-stop delay; the drain starts after it.
    yield* lifecycle.awaitDraining.pipe(
      Effect.zipRight(stopAccepting),
      Effect.interruptible,
      Effect.forkScoped
    )

    /** Waits for every connection to end; at the deadline, interrupts the rest and reports them. Runs once. */
    const drain = yield* Effect.cached(Effect.gen(function*() {
      const startedAt = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      const servedBefore = served
      yield* stopAccepting
      // Finalizers run uninterruptibly and a race's loser must be interruptible to be stopped.
      const forced = yield* Effect.raceFirst(
        Effect.interruptible(Effect.as(Deferred.await(allEnded), false)),
        Effect.interruptible(Effect.as(lifecycle.awaitForced, true))
      )
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      const cut = [...connections.entries()]
      if (forced) {
        yield* Fiber.interruptAll(cut.map(([, fiber]) => fiber))
        for (const [socket] of cut) socket.destroy()
      }
      const finished = served - servedBefore - (forced ? cut.length : 0)
      if (finished > 0 || cut.length > 0) {
        yield* lifecycle.reportDrain({
          component: name,
          durationMs: now - startedAt,
          finished,
          forced: forced ? cut.length : 0,
          unfinished: forced ? cut.map(([socket]) => `${name}: connection from ${socket.remoteAddress}:${socket.remotePort}`) : []
        })
      }
    }))
    yield* Effect.addFinalizer(() => drain)

    return {
      address,
      stats: Effect.sync(() => ({
        accepting,
        connections: connections.size,
        pending: pending.length,
        refused,
        served,
        acceptErrors
      }))
    }
  })
