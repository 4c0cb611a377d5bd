/**
 * Reading a request body into a typed value, with the two client mistakes kept apart.
 *
 * A body over the server's limit is `TooLarge` (413): the client must send less. Anything else wrong with
 * it — unreadable, not JSON, not the expected shape — is `Invalid` (400) with a reason a client can act
 * on, each Schema issue with its path for shape errors. Both are answered by `withMiddleware`'s adapter, so
 * an app only decodes and never builds error responses for its input.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { Invalid, TooLarge } from "keel"

const readText = Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => request.text).pipe(
  Effect.catchTag("RequestError", (error) =>
    Effect.fail(
      error.cause instanceof TooLarge
        ? error.cause
        : new Invalid({ reason: `could not read the body: ${error.description ?? String(error.cause)}` })
    ))
)

const parseJson = (text: string): Effect.Effect<unknown, Invalid> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (error) => new Invalid({ reason: `invalid JSON: ${error instanceof Error ? error.message : String(error)}` })
  })

/** Each issue as `path: message`, e.g. `payload.ms: is missing`. */
const describeIssues = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`)
    .join("; ")

/**
 * Reads the request body and decodes it as JSON of the given Schema, reporting every issue and refusing
 * properties the Schema does not declare. Fails with `TooLarge` when the body is over the server's limit
 * (`maxBodySize` of `keel/node`'s `HttpServer`), and with `Invalid` when it cannot be read, is not JSON or
 * does not match (the reason lists each issue as `path: message`); `withMiddleware` answers them with 413
 * and 400. The returned Effect can be run for every request: make it once (outside the handler), so that
 * the Schema's decoder is made once too.
 *
 * @typeParam A - The decoded value.
 * @typeParam I - The Schema's encoded side, what the JSON must look like.
 * @typeParam R - What the Schema needs to decode.
 *
 * @example
 * ```ts
 * import { HttpServerResponse } from "@effect/platform"
 * import { Effect, Schema } from "effect"
 * import { Middleware } from "keel"
 * import { Body, withMiddleware } from "keel/http"
 *
 * const Greeting = Schema.Struct({ name: Schema.String })
 *
 * // {"name":"Ada"} is answered 200; {"nom":"Ada"} 400, with the issues as the message.
 * const app = Effect.map(Middleware.timeout({ after: "5 seconds" }), (timeout) =>
 *   withMiddleware(timeout)(
 *     Effect.map(Body.json(Greeting), ({ name }) => HttpServerResponse.unsafeJson({ hello: name }))
 *   ))
 * ```
 */
export const json = <A, I, R>(
  schema: Schema.Schema<A, I, R>
): Effect.Effect<A, Invalid | TooLarge, R | HttpServerRequest.HttpServerRequest> => {
  // The decoder is made once per `json(schema)`, not per request.
  const decode = Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })
  const invalid = (error: ParseResult.ParseError) => new Invalid({ reason: describeIssues(error) })
  return readText.pipe(
    Effect.flatMap(parseJson),
    Effect.flatMap((value) => Effect.mapError(decode(value), invalid))
  )
}
