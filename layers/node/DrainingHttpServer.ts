/**
 * An HTTP server for Node that drains instead of dropping requests.
 *
 * Effect's NodeHttpServer has no drain: on Scope close it removes its request handler and closes the
 * listener, so a second request on a kept-alive connection is never answered and shutdown waits until
 * that client gives up. This server is driven by Keel's Lifecycle instead. When draining starts (after
 * the pre-stop delay, so load balancers see readiness fail first) it stops accepting connections and
 * closes idle keep-alive sockets (a socket used in the last 250 ms gets that long to deliver the request
 * its client may be sending); requests already in flight complete. From the first instant of the
 * drain every response carries `Connection: close`, and a request that arrives on a kept-alive connection
 * during the drain is still handled by the app and answered, never left hanging. The server's Scope closes
 * once every connection has ended; at the Lifecycle's deadline the connections still open are destroyed and
 * listed in the shutdown report.
 *
 * It provides `HttpServer.HttpServer`, so `HttpServer.serve(app)` and `HttpRouter` apps run on it
 * unchanged. Bodies are read with a limit (`maxBodySize`): past it, reading fails with a
 * `RequestError` whose cause is `TooLarge`; the rest is discarded unread and the connection closed after
 * the answer. Each request runs lean, as one fiber started synchronously: an app that answers without
 * suspending is answered within the same tick, a tracing span is opened per request only when an application
 * installed a tracer (`RequestSpan`), and request fibers are left out of Effect's fiber metrics.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerError from "@effect/platform/HttpServerError"
import type * as HttpApp from "@effect/platform/HttpApp"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { Lifecycle } from "keel"
import { isTracingIn } from "#keel/internal/tracing"
import * as Http from "node:http"
import * as Net from "node:net"
import * as RequestFiber from "./internal/RequestFiber.js"
import * as RequestSpan from "./internal/RequestSpan.js"
import * as ResponseWriter from "./internal/ResponseWriter.js"
import * as ServerRequest from "./internal/ServerRequest.js"

/** Options of `make` and `layer`. */
export interface Options {
  /** The port to listen on. Default 0: a free port chosen by the system (read it from `address`). */
  readonly port?: number
  /** The address to listen on. Default `127.0.0.1` (this machine only; `0.0.0.0` listens on every interface). */
  readonly host?: string
  /** Names the server in the shutdown report. Default `http`. */
  readonly name?: string
  /** Largest request body read, in bytes. Default 1 MiB. */
  readonly maxBodySize?: number
  /** Connections held at once; Node closes connections past it at once. Default: no limit. */
  readonly maxConnections?: number
  /** How long an idle keep-alive connection stays open. Default 5 seconds (Node's). */
  readonly keepAliveTimeout?: Duration.DurationInput
  /** Longest time to receive a whole request. Default 60 seconds. */
  readonly requestTimeout?: Duration.DurationInput
  /**
   * The route pattern a request matches (`/jobs/:id`, never the raw path), for its span's name and
   * `http.route` when tracing is on; undefined when it matches none. Default: none known, and spans are named
   * by the method alone, as OpenTelemetry's HTTP conventions ask when no low-cardinality route is known.
   */
  readonly route?: (request: HttpServerRequest.HttpServerRequest) => string | undefined
}

/** A snapshot of the server, read from `DrainingServer.stats`. */
export interface Stats {
  /** False once the server has stopped accepting connections: during a drain, after the pre-stop delay. */
  readonly accepting: boolean
  /** Connections open now, idle keep-alive ones included. */
  readonly connections: number
  /** Requests received whose response is not yet completely written. */
  readonly inFlight: number
  /** Responses completed since the start. */
  readonly served: number
}

/** The running server: where it listens and what it holds. */
export interface DrainingServer {
  /** Where the server listens, once it does. */
  readonly address: {
    /** The address bound, as Node reports it (e.g. `127.0.0.1`, `::1`). */
    readonly host: string
    /** The port bound: the one chosen by the system when `port` was 0. */
    readonly port: number
  }
  /** The server's connections and requests now, and whether it still accepts connections. */
  readonly stats: Effect.Effect<Stats>
}

/**
 * The running server's tag, provided by `layer` next to `HttpServer.HttpServer`: read its address (the port
 * chosen when `port` was 0) and its stats from it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { DrainingHttpServer } from "keel/node"
 *
 * const logListening = Effect.gen(function*() {
 *   const server = yield* DrainingHttpServer.DrainingHttpServer
 *   const stats = yield* server.stats
 *   yield* Effect.log(`listening on http://${server.address.host}:${server.address.port}, ${stats.inFlight} in flight`)
 * })
 * ```
 */
export class DrainingHttpServer
  extends Context.Tag("keel/node/DrainingHttpServer")<DrainingHttpServer, DrainingServer>()
{}

const defaultMaxBodySize = 1024 * 1024
/** Bodies declared this small, and within `maxBodySize`, are read before the app runs. */
const preReadLimit = 64 * 1024

/**
 * Starts the server in the current Scope. Requires `Lifecycle`: its draining stops intake (after the
 * pre-stop delay) and its deadline bounds the drain. Closing the Scope drains the server: it waits until
 * every connection has ended, or until the Lifecycle's deadline, when the rest are destroyed and reported.
 * Fails with `ServeError` when it cannot listen (port taken, address not available). `layer` is the usual
 * way in.
 */
export const make = (options: Options = {}): Effect.Effect<
  DrainingServer & {
    /** The server as @effect/platform's `HttpServer.HttpServer`, to serve an app on. */
    readonly server: HttpServer.HttpServer
  },
  HttpServerError.ServeError,
  Scope.Scope | Lifecycle.Lifecycle
> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const clock = yield* Clock.clockWith(Effect.succeed)
    const name = options.name ?? "http"
    const maxBodySize = options.maxBodySize ?? defaultMaxBodySize
    const preReadMaxBytes = Math.min(preReadLimit, maxBodySize)
    const server = Http.createServer({
      keepAliveTimeout: Duration.toMillis(options.keepAliveTimeout ?? Duration.seconds(5)),
      requestTimeout: Duration.toMillis(options.requestTimeout ?? Duration.seconds(60))
    })
    if (options.maxConnections !== undefined) server.maxConnections = options.maxConnections

    // Every open connection, with when it last connected or finished a response: how long it has been idle,
    // for the drain.
    const lastActive = new Map<Net.Socket, number>()
    // Requests whose answer is not yet completely written. One answered within the tick it arrived in is
    // counted only while its fiber runs (`runningInline`).
    const active = new Set<ServerRequest.NodeServerRequest>()
    let runningInline = 0
    let served = 0
    let accepting = true
    // From the first instant of draining every response asks its client to reconnect elsewhere.
    let closeConnections = false
    let servedWhenDrainBegan = 0
    const closed = yield* Deferred.make<void>()

    server.on("connection", (socket: Net.Socket) => {
      lastActive.set(socket, clock.unsafeCurrentTimeMillis())
      socket.once("close", () => lastActive.delete(socket))
    })

    yield* Effect.async<void, HttpServerError.ServeError>((resume) => {
      const onError = (cause: Error) => resume(Effect.fail(new HttpServerError.ServeError({ cause })))
      server.once("error", onError)
      server.listen({ port: options.port ?? 0, host: options.host ?? "127.0.0.1" }, () => {
        server.off("error", onError)
        resume(Effect.void)
      })
    })
    const bound = server.address()
    const address = typeof bound === "object" && bound !== null
      ? { host: bound.address, port: bound.port }
      : { host: options.host ?? "127.0.0.1", port: options.port ?? 0 }

    /**
     * Stops accepting connections and closes the idle ones; busy ones close after their response. An idle
     * keep-alive socket may be carrying the client's next request already (sent, not yet read), and
     * closing it would reset that request: Node's own `server.close()` does so. Here a socket is closed
     * once it has been quiet (no request, no byte read) for `idleGrace`: at once for the sockets idle
     * that long when the drain starts, within `idleGrace` for those just used, whose client is likely
     * sending again (that request is answered, with `Connection: close`).
     */
    const idleGraceMs = 250
    // Bytes read by each socket at the previous sweep: a change means a request is arriving.
    const bytesReadAtSweep = new WeakMap<Net.Socket, number>()
    const sweepIdle = () => {
      const now = clock.unsafeCurrentTimeMillis()
      const busy = new Set([...active].map((request) => request.source.socket))
      for (const socket of lastActive.keys()) {
        const reading = bytesReadAtSweep.has(socket) && bytesReadAtSweep.get(socket) !== socket.bytesRead
        bytesReadAtSweep.set(socket, socket.bytesRead)
        if (busy.has(socket) || reading) lastActive.set(socket, now)
        else if (now - (lastActive.get(socket) ?? now) >= idleGraceMs) socket.destroy()
      }
      if (lastActive.size > 0) setTimeout(sweepIdle, idleGraceMs / 5).unref()
    }
    const stopAccepting = Effect.sync(() => {
      if (!accepting) return
      accepting = false
      closeConnections = true
      servedWhenDrainBegan = served
      Net.Server.prototype.close.call(server, () => Deferred.unsafeDone(closed, Exit.void))
      sweepIdle()
    })

    // From the signal on, answers ask keep-alive clients to reconnect (through the load balancer, which now
    // routes elsewhere); requests and new connections are still served until the pre-stop delay ends and
    // the drain starts.
    yield* lifecycle.awaitShutdown.pipe(
      Effect.zipRight(Effect.sync(() => {
        closeConnections = true
      })),
      Effect.zipRight(lifecycle.awaitDraining),
      Effect.zipRight(stopAccepting),
      Effect.interruptible,
      Effect.forkScoped
    )

    /** Waits for every connection to end; at the deadline, ends the rest and reports them. Runs once. */
    const drain = yield* Effect.cached(Effect.gen(function*() {
      yield* stopAccepting
      const startedAt = clock.unsafeCurrentTimeMillis()
      // Finalizers run uninterruptibly and a race's loser must be interruptible to be stopped.
      const forced = yield* Effect.raceFirst(
        Effect.interruptible(Effect.as(Deferred.await(closed), false)),
        Effect.interruptible(Effect.as(lifecycle.awaitForced, true))
      )
      const now = clock.unsafeCurrentTimeMillis()
      const openConnections = lastActive.size
      const finished = served - servedWhenDrainBegan
      if (!forced) {
        if (finished > 0) {
          yield* lifecycle.reportDrain({ component: name, durationMs: now - startedAt, finished, forced: 0, unfinished: [] })
        }
        return
      }
      const cut = [...active].map((request) =>
        `${name}: ${request.method} ${request.url} (running ${now - request.startedAt} ms)`
      )
      const idle = openConnections - active.size
      server.closeAllConnections()
      yield* lifecycle.reportDrain({
        component: name,
        durationMs: now - startedAt,
        finished,
        forced: openConnections,
        unfinished: idle > 0 ? [...cut, `${name}: ${idle} idle connection(s)`] : cut
      })
    }))
    yield* Effect.addFinalizer(() => drain)

    const finished = (request: ServerRequest.NodeServerRequest) => {
      active.delete(request)
      served++
      const socket = request.source.socket
      if (lastActive.has(socket)) lastActive.set(socket, clock.unsafeCurrentTimeMillis())
    }
    /** Whether the answer to `request` closes its connection: during a drain, or after a refused body. */
    const closesConnection = (request: ServerRequest.NodeServerRequest) => closeConnections || request.bodyRefused
    /** Writes a buffered response the app's fiber ended with, at once; false when there is none to write. */
    const answeredAtOnce = (
      request: ServerRequest.NodeServerRequest,
      exit: Exit.Exit<HttpServerResponse.HttpServerResponse, unknown>
    ) =>
      Exit.isSuccess(exit) && ResponseWriter.writeBuffered(request, exit.value, closesConnection(request))
    /** Writes a streamed body, or the response to a failure, in a fiber of its own. */
    const answerInFiber = (
      request: ServerRequest.NodeServerRequest,
      exit: Exit.Exit<HttpServerResponse.HttpServerResponse, unknown>,
      runtime: Runtime.Runtime<never>
    ): Fiber.RuntimeFiber<void, unknown> => {
      const writing = Runtime.runFork(runtime)(
        Exit.isSuccess(exit)
          ? ResponseWriter.write(request, exit.value, closesConnection(request))
          : writeFailure(request, exit.cause)
      )
      writing.addObserver(() => finished(request))
      return writing
    }
    const writeFailure = (request: ServerRequest.NodeServerRequest, cause: Cause.Cause<unknown>) =>
      Effect.flatMap(HttpServerError.causeResponse(cause), ([response, rest]) =>
        Effect.zipRight(
          Cause.isInterruptedOnly(cause) || Cause.isEmpty(rest)
            ? Effect.void
            : Effect.logError(`${request.method} ${request.url} failed`, rest),
          Effect.suspend(() => ResponseWriter.write(request, response, closesConnection(request)))
        ))

    const serve = (app: HttpApp.Default<unknown>, middleware?: (app: HttpApp.Default<unknown>) => HttpApp.Default<unknown>) =>
      Effect.gen(function*() {
        const serverRuntime = yield* Effect.runtime<never>()
        const requestRuntimeOf = RequestFiber.runtimes(serverRuntime)
        // With tracing off the app runs as it is: the platform server opens a span per request even with no
        // tracer installed. With a tracer, each request is a server span that continues its caller's trace.
        const answering = (middleware === undefined ? app : middleware(app)) as Effect.Effect<
          HttpServerResponse.HttpServerResponse,
          unknown
        >
        const handled = isTracingIn(serverRuntime) ? RequestSpan.traced(answering, address, options.route) : answering
        /**
         * Runs a request as one fiber started synchronously: an app that answers without suspending is
         * answered within the same tick, its buffered body written by this handler itself once the fiber has
         * ended (a streamed body, or the response to a failure, is written by a fiber of its own). The request
         * counts as in flight until its answer is written.
         */
        const run = (request: ServerRequest.NodeServerRequest) => {
          const requestRuntime = requestRuntimeOf(request)
          runningInline++
          const fiber = Runtime.runFork(requestRuntime, handled, RequestFiber.startAtOnce)
          const exit = fiber.unsafePoll()
          runningInline--
          // Answered within this tick, the common case: nothing else ran meanwhile, so the request never
          // needs to be among the active ones, and no fiber is left to watch.
          if (exit !== null && answeredAtOnce(request, exit)) {
            finished(request)
            return
          }
          // Otherwise the fiber still runs, or a fiber writes its answer: either is interrupted if the client
          // goes away first.
          active.add(request)
          let current: Fiber.RuntimeFiber<unknown, unknown> = exit === null
            ? fiber
            : answerInFiber(request, exit, requestRuntime)
          if (exit === null) {
            fiber.addObserver((exit) => {
              if (answeredAtOnce(request, exit)) finished(request)
              else current = answerInFiber(request, exit, requestRuntime)
            })
          }
          const nodeResponse = request.response
          nodeResponse.once("close", () => {
            if (!nodeResponse.writableEnded) current.unsafeInterruptAsFork(HttpServerError.clientAbortFiberId)
          })
        }
        /**
         * A small declared body (most JSON requests) is read before the app runs, as Fastify does: it has
         * usually arrived with the head, and an app that then reads it without suspending is answered in
         * the synchronous path above, with no fiber for its timeout and no watch on its connection. The
         * request is in flight (the drain waits for it) while its body arrives.
         */
        const handler = (nodeRequest: Http.IncomingMessage, nodeResponse: Http.ServerResponse) => {
          const request = new ServerRequest.NodeServerRequest(
            nodeRequest,
            nodeResponse,
            maxBodySize,
            clock.unsafeCurrentTimeMillis()
          )
          const declared = Number(nodeRequest.headers["content-length"] ?? 0)
          if (!(declared > 0 && declared <= preReadMaxBytes)) return run(request)
          active.add(request)
          request.preRead(() => {
            active.delete(request)
            run(request)
          }, () => finished(request))
        }
        server.on("request", handler)
        // The handler stays until the server has drained: a request on a kept-alive connection is answered.
        yield* Effect.addFinalizer(() => Effect.zipRight(drain, Effect.sync(() => server.off("request", handler))))
      })

    const platformServer = HttpServer.make({
      address: { _tag: "TcpAddress", hostname: address.host, port: address.port },
      serve: serve as (app: HttpApp.Default<unknown>) => Effect.Effect<void, never, Scope.Scope>
    })
    return {
      server: platformServer,
      address,
      stats: Effect.sync(() => ({ accepting, connections: lastActive.size, inFlight: active.size + runningInline, served }))
    }
  })

/**
 * `HttpServer.HttpServer` (for `HttpServer.serve(app)`) plus `DrainingHttpServer` for its address and stats,
 * started by `make`: the server lives, and drains, with the layer. Fails with `ServeError` when it cannot
 * listen.
 *
 * @example
 * ```ts
 * import { HttpServer, HttpServerResponse } from "@effect/platform"
 * import { Effect, Layer } from "effect"
 * import { DrainingHttpServer, runMain } from "keel/node"
 *
 * const app = Effect.succeed(HttpServerResponse.text("hello"))
 * const ServerLive = HttpServer.serve(app).pipe(
 *   Layer.provide(DrainingHttpServer.layer({ port: 8080, host: "0.0.0.0", maxBodySize: 64 * 1024 }))
 * )
 *
 * runMain(Layer.launch(ServerLive)) // SIGTERM: stop accepting, finish requests, exit
 * ```
 */
export const layer = (
  options: Options = {}
): Layer.Layer<HttpServer.HttpServer | DrainingHttpServer, HttpServerError.ServeError, Lifecycle.Lifecycle> =>
  Layer.scopedContext(Effect.map(make(options), ({ server, ...draining }) =>
    Context.make(HttpServer.HttpServer, server).pipe(Context.add(DrainingHttpServer, draining))))
