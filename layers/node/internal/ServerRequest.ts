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

/**
 * Multipart parsing (multipasta and the platform's Node adapters, ten modules) is loaded when a request first
 * reads a multipart body rather than at start-up: few services take uploads, every one starts.
 */
const nodeMultipart = Effect.promise(() => import("@effect/platform-node/NodeMultipart"))

/** One request as @effect/platform sees it, read straight from Node's IncomingMessage. */
export class NodeServerRequest extends Inspectable.Class implements HttpServerRequest.HttpServerRequest {
  readonly [HttpServerRequest.TypeId]: HttpServerRequest.TypeId = HttpServerRequest.TypeId
  readonly [HttpIncomingMessage.TypeId]: HttpIncomingMessage.TypeId = HttpIncomingMessage.TypeId
  /** The body once read (its Exit), or the readers waiting while it is read; undefined before the first read. */
  private bodyState:
    | Exit.Exit<Buffer, HttpServerError.RequestError>
    | Array<(exit: Exit.Exit<Buffer, HttpServerError.RequestError>) => void>
    | undefined
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

  /**
   * The body, read once however many times it is asked for. A hand-kept memo rather than `Effect.cached`,
   * which makes a Ref and a Deferred for every request.
   */
  private body(): Effect.Effect<Buffer, HttpServerError.RequestError> {
    const state = this.bodyState
    if (state !== undefined && !Array.isArray(state)) return state
    if (state !== undefined) return Effect.async((resume) => void state.push(resume))
    const waiting: Array<(exit: Exit.Exit<Buffer, HttpServerError.RequestError>) => void> = []
    this.bodyState = waiting
    return Effect.onExit(this.readBody(), (exit) =>
      Effect.sync(() => {
        // An interrupted read is not the body's answer: the next reader reads again.
        this.bodyState = Exit.isInterrupted(exit) ? undefined : exit
        for (const resume of waiting) resume(exit)
      }))
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
