/**
 * An HTTP server for Node that drains instead of dropping requests, and runs each request lean.
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
 * Each request runs as one fiber started synchronously (`immediate`): an app that answers without
 * suspending is answered within the same tick, its buffered body written by the request handler itself
 * once the fiber has ended (a streamed body, or the response to a failure, is written by a fiber of its
 * own). No tracing span is opened per request (the platform server opens one even with no tracer
 * installed), request fibers are left out of Effect's fiber metrics, and a small buffered body leaves in
 * one chunk with the head.
 * It provides `HttpServer.HttpServer`, so `HttpServer.serve(app)` and `HttpRouter` apps run on it
 * unchanged. Bodies are read with a limit (`maxBodySize`): past it, reading fails with a
 * `RequestError` whose cause is `TooLarge`; the rest is discarded unread and the connection closed after
 * the answer.
 */
import * as Cookies from "@effect/platform/Cookies"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as UrlParams from "@effect/platform/UrlParams"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Headers from "@effect/platform/Headers"
import type * as HttpApp from "@effect/platform/HttpApp"
import type * as HttpMethod from "@effect/platform/HttpMethod"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type * as Multipart from "@effect/platform/Multipart"
import type * as Path from "@effect/platform/Path"
import type * as Socket from "@effect/platform/Socket"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Lifecycle, TooLarge } from "keel"
import * as Http from "node:http"
import * as Net from "node:net"
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"

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
 * import { HttpServer as DrainingHttpServer } from "keel/node"
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

/** A request's fiber runs within the request handler until it first suspends. */
const startAtOnce: Runtime.RunForkOptions = { immediate: true }

/**
 * Multipart parsing (multipasta and the platform's Node adapters, ten modules) is loaded when a request first
 * reads a multipart body rather than at start-up: few services take uploads, every one starts.
 */
const nodeMultipart = Effect.promise(() => import("@effect/platform-node/NodeMultipart"))

/** One request as @effect/platform sees it, read straight from Node's IncomingMessage. */
class NodeServerRequest extends Inspectable.Class implements HttpServerRequest.HttpServerRequest {
  readonly [HttpServerRequest.TypeId]: HttpServerRequest.TypeId = HttpServerRequest.TypeId
  readonly [HttpIncomingMessage.TypeId]: HttpIncomingMessage.TypeId = HttpIncomingMessage.TypeId
  private cachedBody: Effect.Effect<Buffer, HttpServerError.RequestError> | undefined
  private cachedCookies: Record<string, string> | undefined

  readonly source: Http.IncomingMessage
  /** Where the answer goes; shared by the copies `modify` makes. */
  readonly response: Http.ServerResponse
  readonly maxBodySize: number
  /** When the server received it, for the drain report. */
  readonly startedAt: number
  readonly url: string
  private readonly headersOverride: Headers.Headers | undefined
  private readonly remoteAddressOverride: string | undefined

  constructor(
    source: Http.IncomingMessage,
    response: Http.ServerResponse,
    maxBodySize: number,
    startedAt: number,
    url: string = source.url ?? "/",
    headersOverride?: Headers.Headers,
    remoteAddressOverride?: string
  ) {
    super()
    this.source = source
    this.response = response
    this.maxBodySize = maxBodySize
    this.startedAt = startedAt
    this.url = url
    this.headersOverride = headersOverride
    this.remoteAddressOverride = remoteAddressOverride
  }

  get originalUrl(): string {
    return this.source.url ?? "/"
  }

  // Node's parser gives the method in upper case already.
  get method(): HttpMethod.HttpMethod {
    return (this.source.method ?? "GET") as HttpMethod.HttpMethod
  }

  get headers(): Headers.Headers {
    return this.headersOverride ?? (this.source.headers as Headers.Headers)
  }

  get cookies(): Record<string, string> {
    return this.cachedCookies ??= Cookies.parseHeader(this.headers["cookie"] ?? "")
  }

  get remoteAddress(): Option.Option<string> {
    return Option.fromNullable(this.remoteAddressOverride ?? this.source.socket.remoteAddress)
  }

  private readError(cause: unknown): HttpServerError.RequestError {
    return new HttpServerError.RequestError({ request: this, reason: "Decode", cause })
  }

  private tooLarge(): HttpServerError.RequestError {
    this.bodyRefused = true
    return new HttpServerError.RequestError({
      request: this,
      reason: "Decode",
      cause: new TooLarge({ what: "request body", limit: this.maxBodySize }),
      description: `request body over the limit of ${this.maxBodySize} bytes`
    })
  }

  /**
   * Set once the body was refused as too large: the rest of it is discarded unread and the response
   * closes the connection (answering before the client has sent everything, without resetting it).
   */
  bodyRefused = false

  /**
   * The whole body, at most `maxBodySize` bytes: a declared length over it is refused before reading, an
   * undeclared one as soon as the bytes read pass it.
   */
  private readBody(): Effect.Effect<Buffer, HttpServerError.RequestError> {
    if (Number(this.source.headers["content-length"] ?? 0) > this.maxBodySize) {
      return Effect.suspend(() => {
        this.source.resume()
        return Effect.fail(this.tooLarge())
      })
    }
    return Effect.async<Buffer, HttpServerError.RequestError>((resume) => {
      const source = this.source
      const chunks: Array<Buffer> = []
      let size = 0
      const stopListening = () => {
        source.off("data", onData)
        source.off("end", onEnd)
        source.off("error", onError)
      }
      const onData = (chunk: Buffer) => {
        size += chunk.length
        if (size <= this.maxBodySize) return void chunks.push(chunk)
        stopListening()
        source.resume()
        resume(Effect.fail(this.tooLarge()))
      }
      const onEnd = () => {
        stopListening()
        resume(Effect.succeed(Buffer.concat(chunks, size)))
      }
      const onError = (error: Error) => {
        stopListening()
        resume(Effect.fail(this.readError(error)))
      }
      source.on("data", onData)
      source.on("end", onEnd)
      source.on("error", onError)
      return Effect.sync(stopListening)
    })
  }

  private body(): Effect.Effect<Buffer, HttpServerError.RequestError> {
    return this.cachedBody ??= Effect.runSync(Effect.cached(this.readBody()))
  }

  get text(): Effect.Effect<string, HttpServerError.RequestError> {
    return Effect.map(this.body(), (bytes) => bytes.toString("utf8"))
  }

  get json(): Effect.Effect<unknown, HttpServerError.RequestError> {
    return Effect.flatMap(this.text, (text) =>
      Effect.try({
        try: () => text === "" ? null : JSON.parse(text) as unknown,
        catch: (cause) => this.readError(cause)
      }))
  }

  get urlParamsBody(): Effect.Effect<UrlParams.UrlParams, HttpServerError.RequestError> {
    return Effect.map(this.text, (text) => UrlParams.fromInput(new URLSearchParams(text)))
  }

  get arrayBuffer(): Effect.Effect<ArrayBuffer, HttpServerError.RequestError> {
    return Effect.map(this.body(), (bytes) => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer)
  }

  get stream(): Stream.Stream<Uint8Array, HttpServerError.RequestError> {
    return NodeStream.fromReadable<HttpServerError.RequestError, Uint8Array>(() => this.source, (error) => this.readError(error))
  }

  get multipart(): Effect.Effect<
    Multipart.Persisted,
    Multipart.MultipartError,
    Scope.Scope | FileSystem.FileSystem | Path.Path
  > {
    return Effect.flatMap(nodeMultipart, (multipart) => multipart.persisted(this.source, this.source.headers))
  }

  get multipartStream(): Stream.Stream<Multipart.Part, Multipart.MultipartError> {
    return Stream.unwrap(Effect.map(nodeMultipart, (multipart) => multipart.stream(this.source, this.source.headers)))
  }

  get upgrade(): Effect.Effect<Socket.Socket, HttpServerError.RequestError> {
    return Effect.fail(
      new HttpServerError.RequestError({ request: this, reason: "Decode", description: "upgrades are not served" })
    )
  }

  modify(options: { readonly url?: string; readonly headers?: Headers.Headers; readonly remoteAddress?: string }) {
    return new NodeServerRequest(
      this.source,
      this.response,
      this.maxBodySize,
      this.startedAt,
      options.url ?? this.url,
      options.headers ?? this.headersOverride,
      options.remoteAddress ?? this.remoteAddressOverride
    )
  }

  toJSON(): unknown {
    return { _id: "@effect/platform/HttpServerRequest", method: this.method, url: this.originalUrl }
  }
}

/**
 * A request's services: the server's, plus the request itself. Effect never writes to a Context's map
 * once made (adding a service copies it), so instead of copying the server's services into a new Map for
 * every request, this one reads through to them; it is a Map to every reader, and refuses writes.
 */
class ServicesWithRequest extends Map<string, unknown> {
  readonly #services: ReadonlyMap<string, unknown>
  readonly #request: HttpServerRequest.HttpServerRequest
  constructor(services: ReadonlyMap<string, unknown>, request: HttpServerRequest.HttpServerRequest) {
    super()
    this.#services = services
    this.#request = request
  }
  override get(key: string): unknown {
    return key === requestKey ? this.#request : this.#services.get(key)
  }
  override has(key: string): boolean {
    return key === requestKey || this.#services.has(key)
  }
  override get size(): number {
    return this.#services.has(requestKey) ? this.#services.size : this.#services.size + 1
  }
  override *entries(): MapIterator<[string, unknown]> {
    for (const entry of this.#services) if (entry[0] !== requestKey) yield entry
    yield [requestKey, this.#request]
  }
  override [Symbol.iterator](): MapIterator<[string, unknown]> {
    return this.entries()
  }
  override *keys(): MapIterator<string> {
    for (const [key] of this.entries()) yield key
  }
  override *values(): MapIterator<unknown> {
    for (const [, value] of this.entries()) yield value
  }
  override forEach(callback: (value: unknown, key: string, map: Map<string, unknown>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this)
  }
  override set(): this {
    throw new TypeError("a request's services are read-only")
  }
  override delete(): boolean {
    throw new TypeError("a request's services are read-only")
  }
  override clear(): void {
    throw new TypeError("a request's services are read-only")
  }
}
const requestKey = HttpServerRequest.HttpServerRequest.key

/** Writes the status line and headers. */
const writeHead = (
  nodeResponse: Http.ServerResponse,
  response: HttpServerResponse.HttpServerResponse,
  closeConnection: boolean
) => {
  let headers: Record<string, string | Array<string>> = response.headers
  if (!Cookies.isEmpty(response.cookies)) {
    headers = { ...headers, "set-cookie": Cookies.toSetCookieHeaders(response.cookies) }
  }
  if (closeConnection) headers = { ...headers, connection: "close" }
  nodeResponse.writeHead(response.status, headers)
}

/**
 * Bodies up to this size go out in one chunk with the head: Node joins the head to a first chunk given as
 * a string, never to bytes (with a content-length, which bodies in memory carry; a chunked response would
 * join it to the chunk's size line instead), and latin1 turns each byte into one character and back, so the
 * bytes are sent unchanged. Larger bodies are passed as they are rather than copied into a string.
 */
const joinWithHeadMaxBytes = 16 * 1024

// Buffer's own latin1 decoder, called on the bytes as they are: making a Buffer view of them first costs
// more than decoding a small body. Node has it on Buffer.prototype without documenting it; if it ever goes,
// the view it is.
const bufferLatin1Slice = (Buffer.prototype as unknown as {
  latin1Slice?: (this: Uint8Array, start: number, end: number) => string
}).latin1Slice
const latin1 = (bytes: Uint8Array): string =>
  bufferLatin1Slice === undefined
    ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1")
    : bufferLatin1Slice.call(bytes, 0, bytes.byteLength)

const endWithBytes = (nodeResponse: Http.ServerResponse, bytes: Uint8Array): void => {
  if (bytes.byteLength > joinWithHeadMaxBytes) nodeResponse.end(bytes)
  else nodeResponse.end(latin1(bytes), "latin1")
}

/**
 * Writes a response whose body is in memory, at once; false (and nothing written) for one that must be
 * streamed.
 */
const writeBuffered = (
  request: NodeServerRequest,
  response: HttpServerResponse.HttpServerResponse,
  closeConnection: boolean
): boolean => {
  const nodeResponse = request.response
  const body = response.body
  const inMemory = body._tag === "Empty" || body._tag === "Uint8Array" ||
    (body._tag === "Raw" && !(body.body instanceof Readable))
  if (!inMemory && request.source.method !== "HEAD") return false
  if (nodeResponse.writableEnded || nodeResponse.headersSent) return true
  writeHead(nodeResponse, response, closeConnection)
  if (request.source.method === "HEAD" || body._tag === "Empty") nodeResponse.end()
  else if (body._tag === "Uint8Array") endWithBytes(nodeResponse, body.body)
  else if (body._tag === "Raw") nodeResponse.end(body.body as string | Uint8Array)
  return true
}

/** Writes any response to Node: buffered bodies at once, streamed ones with backpressure. */
const writeResponse = (
  request: NodeServerRequest,
  response: HttpServerResponse.HttpServerResponse,
  closeConnection: boolean
): Effect.Effect<void, unknown> => {
  if (writeBuffered(request, response, closeConnection)) return Effect.void
  const nodeResponse = request.response
  if (nodeResponse.writableEnded || nodeResponse.headersSent) return Effect.void
  writeHead(nodeResponse, response, closeConnection)
  const body = response.body
  switch (body._tag) {
    case "Raw":
      return Effect.tryPromise((signal) => pipeline(body.body as Readable, nodeResponse, { signal }))
    case "Stream":
      return Effect.flatMap(
        NodeStream.toReadable(body.stream),
        (readable) => Effect.tryPromise((signal) => pipeline(readable, nodeResponse, { signal }))
      )
    case "FormData": {
      const encoded = new Response(body.formData)
      nodeResponse.setHeader("content-type", encoded.headers.get("content-type") ?? "multipart/form-data")
      return Effect.tryPromise((signal) =>
        pipeline(Readable.fromWeb(encoded.body as import("node:stream/web").ReadableStream), nodeResponse, { signal })
      )
    }
    default:
      return Effect.void
  }
}

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
    const active = new Set<NodeServerRequest>()
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

    yield* lifecycle.awaitDraining.pipe(
      Effect.zipRight(Effect.sync(() => {
        closeConnections = true
      })),
      Effect.zipRight(Effect.raceFirst(Effect.sleep(lifecycle.preStopDelay), Effect.asVoid(lifecycle.awaitForced))),
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

    const finished = (request: NodeServerRequest) => {
      active.delete(request)
      served++
      const socket = request.source.socket
      if (lastActive.has(socket)) lastActive.set(socket, clock.unsafeCurrentTimeMillis())
    }
    /** Whether the answer to `request` closes its connection: during a drain, or after a refused body. */
    const closesConnection = (request: NodeServerRequest) => closeConnections || request.bodyRefused
    /** Writes a buffered response the app's fiber ended with, at once; false when there is none to write. */
    const answeredAtOnce = (request: NodeServerRequest, exit: Exit.Exit<HttpServerResponse.HttpServerResponse, unknown>) =>
      Exit.isSuccess(exit) && writeBuffered(request, exit.value, closesConnection(request))
    /** Writes a streamed body, or the response to a failure, in a fiber of its own. */
    const answerInFiber = (
      request: NodeServerRequest,
      exit: Exit.Exit<HttpServerResponse.HttpServerResponse, unknown>,
      runtime: Runtime.Runtime<never>
    ): Fiber.RuntimeFiber<void, unknown> => {
      const writing = Runtime.runFork(runtime)(
        Exit.isSuccess(exit)
          ? writeResponse(request, exit.value, closesConnection(request))
          : writeFailure(request, exit.cause)
      )
      writing.addObserver(() => finished(request))
      return writing
    }
    const writeFailure = (request: NodeServerRequest, cause: Cause.Cause<unknown>) =>
      Effect.flatMap(HttpServerError.causeResponse(cause), ([response, rest]) =>
        Effect.zipRight(
          Cause.isInterruptedOnly(cause) || Cause.isEmpty(rest)
            ? Effect.void
            : Effect.logError(`${request.method} ${request.url} failed`, rest),
          Effect.suspend(() => writeResponse(request, response, closesConnection(request)))
        ))

    const serve = (app: HttpApp.Default<unknown>, middleware?: (app: HttpApp.Default<unknown>) => HttpApp.Default<unknown>) =>
      Effect.gen(function*() {
        const runtime = yield* Effect.runtime<never>()
        // Request fibers are not counted in Effect's fiber metrics (effect_fiber_*): one per request would
        // cost five metric updates each and drown the rest; HttpMetrics counts requests.
        const requestFlags = RuntimeFlags.disable(runtime.runtimeFlags, RuntimeFlags.RuntimeMetrics)
        // The request fiber starts from the server's fiber refs less those it would only replace (its context,
        // set when it starts, and the snapshot of its runtime flags a fiber writes whenever its refs are read)
        // and less those still at their initial value, which an absent fiber ref reads as anyway. With none
        // left (no logger or log level of the server's own), starting the fiber copies no fiber refs at all.
        const initially = FiberRefs.empty()
        const requestFiberRefs = FiberRefs.unsafeMake(new Map(
          [...runtime.fiberRefs.locals].filter(([fiberRef, stack]) =>
            fiberRef !== FiberRef.currentContext && fiberRef !== FiberRef.currentRuntimeFlags &&
            !Equal.equals(stack[0][1], FiberRefs.getOrDefault(initially, fiberRef))
          )
        ))
        // The server's services plus the request, read through to the server's own map rather than copied.
        const services = runtime.context.unsafeMap
        const contextWith = (request: NodeServerRequest) =>
          Context.unsafeMake<HttpServerRequest.HttpServerRequest>(new ServicesWithRequest(services, request))
        const handled = (middleware === undefined ? app : middleware(app)) as Effect.Effect<
          HttpServerResponse.HttpServerResponse,
          unknown
        >
        const handler = (nodeRequest: Http.IncomingMessage, nodeResponse: Http.ServerResponse) => {
          const request = new NodeServerRequest(nodeRequest, nodeResponse, maxBodySize, clock.unsafeCurrentTimeMillis())
          const requestRuntime = Runtime.make({
            context: contextWith(request),
            runtimeFlags: requestFlags,
            fiberRefs: requestFiberRefs
          })
          runningInline++
          const fiber = Runtime.runFork(requestRuntime, handled, startAtOnce)
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
          nodeResponse.once("close", () => {
            if (!nodeResponse.writableEnded) current.unsafeInterruptAsFork(HttpServerError.clientAbortFiberId)
          })
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
 * import { HttpServer as DrainingHttpServer, runMain } from "keel/node"
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
