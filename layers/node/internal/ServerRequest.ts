/**
 * ServerRequest — one HTTP request as @effect/platform sees it, read straight from Node's IncomingMessage.
 *
 * The platform's own Node request is not exported, and the draining server needs more from a request: the
 * Node response its answer goes to, when it arrived (for the drain report), and a body limit that fails with
 * `TooLarge` and has the connection closed after the answer. Making one per request costs its fields only:
 * the URL, method and headers are Node's own, read when asked for; cookies are parsed on first read; the body
 * is read once, with plain listeners, into one Buffer that `text`, `json`, `urlParamsBody` and `arrayBuffer`
 * share; the multipart parser is loaded when a request first reads a multipart body. `source` and `response`
 * carry the names of the platform's own fields, which `NodeHttpServerRequest.toIncomingMessage` and
 * `toServerResponse` read.
 */
import * as Cookies from "@effect/platform/Cookies"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as UrlParams from "@effect/platform/UrlParams"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Headers from "@effect/platform/Headers"
import type * as HttpMethod from "@effect/platform/HttpMethod"
import type * as Multipart from "@effect/platform/Multipart"
import type * as Path from "@effect/platform/Path"
import type * as Socket from "@effect/platform/Socket"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Inspectable from "effect/Inspectable"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { TooLarge } from "keel"
import type * as Http from "node:http"
import type * as Net from "node:net"
import { Readable } from "node:stream"

/** How long a connection whose body was refused is read on (and discarded) after the answer, at most. */
const lingerMs = 2_000

/**
 * A body refused as too large is answered before the client has sent all of it, with `Connection: close`.
 * Closing the socket outright once the answer is written (Node's `destroySoon`) would make the kernel reset
 * the connection on the client's next bytes, and a client still writing loses the answer with an EPIPE or
 * ECONNRESET. So, as Apache's and nginx's lingering close do, our side is closed and the client's bytes are
 * read and dropped until it closes its own side, or `lingerMs` have passed.
 */
const lingerOnClose = (socket: Net.Socket) => {
  socket.destroySoon = () => {
    socket.end()
    socket.resume()
    const timer = setTimeout(() => socket.destroy(), lingerMs)
    timer.unref()
    socket.once("end", () => {
      clearTimeout(timer)
      socket.destroy()
    })
    socket.once("close", () => clearTimeout(timer))
  }
}

/** A request body's read: its Exit once read, the readers waiting while it is read, undefined before. */
interface BodyRead {
  state:
    | Exit.Exit<Buffer, HttpServerError.RequestError>
    | Array<(exit: Exit.Exit<Buffer, HttpServerError.RequestError>) => void>
    | undefined
}

/**
 * Multipart parsing (multipasta and the platform's Node adapters, ten modules) is loaded when a request first
 * reads a multipart body rather than at start-up: few services take uploads, every one starts.
 */
const nodeMultipart = Effect.promise(() => import("@effect/platform-node/NodeMultipart"))

/** One request as @effect/platform sees it, read straight from Node's IncomingMessage. */
export class NodeServerRequest extends Inspectable.Class implements HttpServerRequest.HttpServerRequest {
  readonly [HttpServerRequest.TypeId]: HttpServerRequest.TypeId = HttpServerRequest.TypeId
  readonly [HttpIncomingMessage.TypeId]: HttpIncomingMessage.TypeId = HttpIncomingMessage.TypeId
  /** The body's read, shared by the copies `modify` makes: Node's stream can be read only once. */
  private readonly bodyRead: BodyRead
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
    remoteAddressOverride?: string,
    bodyRead: BodyRead = { state: undefined }
  ) {
    super()
    this.source = source
    this.response = response
    this.maxBodySize = maxBodySize
    this.startedAt = startedAt
    this.url = url
    this.headersOverride = headersOverride
    this.remoteAddressOverride = remoteAddressOverride
    this.bodyRead = bodyRead
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
    lingerOnClose(this.source.socket)
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
   * Reads the whole body, at most `maxBodySize` bytes, and calls `done` once with it or with why it could not
   * be read: a declared length over the limit is refused before reading, an undeclared one as soon as the
   * bytes read pass it. Returns a function that stops listening (`done` is then never called).
   */
  private readBodyThen(done: (exit: Exit.Exit<Buffer, HttpServerError.RequestError>) => void): () => void {
    const source = this.source
    if (Number(source.headers["content-length"] ?? 0) > this.maxBodySize) {
      source.resume()
      done(Exit.fail(this.tooLarge()))
      return () => {}
    }
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
      done(Exit.fail(this.tooLarge()))
    }
    const onEnd = () => {
      stopListening()
      done(Exit.succeed(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)))
    }
    const onError = (error: Error) => {
      stopListening()
      done(Exit.fail(this.readError(error)))
    }
    source.on("data", onData)
    source.on("end", onEnd)
    source.on("error", onError)
    return stopListening
  }

  /**
   * Reads the body before the app runs, for a body that is small and declared (`content-length`): it has
   * usually arrived with the head, so the app then reads it without suspending. Calls `ready` once the body
   * (or why it could not be read) is there for the app, `gone` instead if the client goes away first.
   */
  preRead(ready: () => void, gone: () => void): void {
    this.bodyRead.state = []
    const stop = this.readBodyThen((exit) => {
      this.source.off("close", onClose)
      // A read that failed because the client went away (a reset mid-body) has no one to answer.
      if (Exit.isFailure(exit) && this.source.socket.destroyed) return gone()
      this.bodyRead.state = exit
      ready()
    })
    const onClose = () => {
      stop()
      gone()
    }
    this.source.once("close", onClose)
  }

  /**
   * The body, read once however many times it is asked for. A hand-kept memo rather than `Effect.cached`,
   * which makes a Ref and a Deferred for every request.
   */
  private body(): Effect.Effect<Buffer, HttpServerError.RequestError> {
    const state = this.bodyRead.state
    if (state !== undefined && !Array.isArray(state)) return state
    if (state !== undefined) return Effect.async((resume) => void state.push(resume))
    const waiting: Array<(exit: Exit.Exit<Buffer, HttpServerError.RequestError>) => void> = []
    this.bodyRead.state = waiting
    return Effect.async<Buffer, HttpServerError.RequestError>((resume) => {
      const stop = this.readBodyThen((exit) => {
        this.bodyRead.state = exit
        for (const waiter of waiting) waiter(exit)
        resume(exit)
      })
      // An interrupted read is not the body's answer: the next reader reads again.
      return Effect.sync(() => {
        stop()
        this.bodyRead.state = undefined
      })
    })
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

  /** The body as a stream: Node's own, or the bytes already read into memory (by `preRead` or a reader). */
  private bodySource(): Readable {
    const state = this.bodyRead.state
    return state !== undefined && !Array.isArray(state) && Exit.isSuccess(state) ? Readable.from([state.value]) : this.source
  }

  get stream(): Stream.Stream<Uint8Array, HttpServerError.RequestError> {
    return NodeStream.fromReadable<HttpServerError.RequestError, Uint8Array>(() => this.bodySource(), (error) => this.readError(error))
  }

  get multipart(): Effect.Effect<
    Multipart.Persisted,
    Multipart.MultipartError,
    Scope.Scope | FileSystem.FileSystem | Path.Path
  > {
    return Effect.flatMap(nodeMultipart, (multipart) => multipart.persisted(this.bodySource(), this.source.headers))
  }

  get multipartStream(): Stream.Stream<Multipart.Part, Multipart.MultipartError> {
    return Stream.unwrap(Effect.map(nodeMultipart, (multipart) => multipart.stream(this.bodySource(), this.source.headers)))
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
      options.remoteAddress ?? this.remoteAddressOverride,
      this.bodyRead
    )
  }

  toJSON(): unknown {
    return { _id: "@effect/platform/HttpServerRequest", method: this.method, url: this.originalUrl }
  }
}
