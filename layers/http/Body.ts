/**
 * Reading a request body into a typed value, with the two client mistakes kept apart.
 *
 * A body over the server's limit is `TooLarge` (413): the client must send less. Anything else wrong with
 * it — unreadable, not JSON, not the expected shape — is `Invalid` (400) with a reason a client can act
 * on, each Schema issue with its path for shape errors. Both are answered by `withMiddleware`'s adapter, so
 * an app only decodes and never builds error responses for its input.
 */
import { HttpServerRequest } from "@effect/platform"
import { Effect, ParseResult, Schema } from "effect"
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

/** Decodes the request body as JSON of the given Schema. */
export const json = <A, I, R>(
  schema: Schema.Schema<A, I, R>
): Effect.Effect<A, Invalid | TooLarge, R | HttpServerRequest.HttpServerRequest> =>
  readText.pipe(
    Effect.flatMap(parseJson),
    Effect.flatMap((value) =>
      Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })(value).pipe(
        Effect.mapError((error) => new Invalid({ reason: describeIssues(error) }))
      )
    )
  )
