/**
 * ResponseWriter — writes an app's response to Node, at once when its body is in memory.
 *
 * Most answers (text, JSON, bytes, no body) are in memory when the app's fiber ends: `writeBuffered` writes
 * them synchronously, so the request handler answers itself, with no fiber of its own for the writing. Only a
 * body that must be streamed (a Stream, a Node Readable, form data) takes `write`'s fiber, which pipes it
 * with backpressure. A small body in memory leaves in one chunk with the head rather than in a second one,
 * decoded as latin1 first: Node joins the head only to a string (`joinWithHeadMaxBytes`).
 */
import * as Cookies from "@effect/platform/Cookies"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Effect from "effect/Effect"
import type * as Http from "node:http"
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import type { NodeServerRequest } from "./ServerRequest.js"

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
export const writeBuffered = (
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
export const write = (
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
