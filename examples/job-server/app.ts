/**
 * The job server's HTTP API as one @effect/platform HttpApp.
 *
 * Routing is a match on method and path over a fixed table of routes, each an HttpApp built once at
 * start: request metrics by route, then the Keel middleware stack (per-client rate limit, load shedding
 * in front of a concurrency limit, request timeout), then the handler. The platform's HttpRouter would do
 * the matching too, but measured on this server it costs about 40 % of the requests per second of a
 * health check, for seven routes; the app stays a plain HttpApp, so any platform middleware still applies.
 *
 * Every error a client can cause has a status and a JSON body `{ error, message }`: 400 (invalid JSON or
 * shape), 404, 405 (with `Allow`), 413, 429 and 503 (with `Retry-After`), 504.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Lifecycle, Middleware } from "keel"
import type { Invalid, QueueFull, ShuttingDown, TooLarge } from "keel"
import { Body, HttpMetrics, Prometheus, withMiddleware } from "keel/http"
import { JobStore } from "keel/services"
import type { Settings } from "./config.js"
import { Downstream } from "./downstream.js"
import { JobRequest, Jobs } from "./jobs.js"

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson(body, { status, headers })

const errorResponse = (status: number, error: string, message: string, headers: Record<string, string> = {}) =>
  json({ error, message }, status, headers)

/** A job record as clients see it. */
const view = (record: JobStore.JobRecord) => {
  const { _tag, ...details } = record.state
  return {
    id: record.id,
    kind: record.kind,
    state: _tag.toLowerCase(),
    ...details,
    createdAt: new Date(record.createdAt).toISOString(),
    updatedAt: new Date(record.updatedAt).toISOString()
  }
}

/** The store is full or a backend could not be reached: the client should try again shortly. */
const retryLater = (error: { readonly _tag: string; readonly message: string }) =>
  Effect.succeed(errorResponse(503, error._tag, error.message, { "retry-after": "1" }))

const readJobRequest = Body.json(JobRequest)

const submitJob = Effect.gen(function*() {
  const request = yield* readJobRequest
  const store = yield* JobStore.JobStore
  const jobs = yield* Jobs
  const id = crypto.randomUUID()
  const { record, created } = yield* store.create({
    id,
    kind: request.kind,
    ...(request.idempotencyKey === undefined ? {} : { idempotencyKey: request.idempotencyKey })
  })
  if (!created) return json(view(record), 200, { location: `/jobs/${record.id}` })
  yield* jobs.trySubmit(request, { id }).pipe(Effect.tapError(() => store.remove(id)))
  return json({ id, state: "queued" }, 202, { location: `/jobs/${id}` })
}).pipe(
  Effect.catchTags({ StoreFull: retryLater, StoreUnavailable: retryLater, QueueUnavailable: retryLater })
)

const jobIdFrom = (url: string) => decodeURIComponent(url.slice("/jobs/".length).split("?")[0] ?? "")

const getJob = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const id = jobIdFrom(request.url)
  const record = yield* Effect.flatMap(JobStore.JobStore, (store) => store.get(id))
  return Option.match(record, {
    onNone: () => errorResponse(404, "NotFound", `no job ${id}`),
    onSome: (found) => json(view(found))
  })
}).pipe(Effect.catchTag("StoreUnavailable", retryLater))

/** Liveness: 200 while the process runs, through the pre-stop delay and the drain (restarting it would cut the drain). */
const alive = Effect.succeed(HttpServerResponse.text("ok"))

/** Readiness: 503 from the first instant of a shutdown, so that load balancers stop routing here. */
const readyz = Effect.map(
  Lifecycle.phase,
  (phase) => phase === "running" ? json({ ready: true }) : json({ ready: false, reason: phase }, 503)
)

const DownstreamPatch = Schema.Struct({
  failureRate: Schema.optional(Schema.Number.pipe(Schema.between(0, 1))),
  latencyMs: Schema.optional(Schema.Int.pipe(Schema.between(0, 60_000)))
})

const downstreamState = Effect.gen(function*() {
  const downstream = yield* Downstream
  const settings = yield* downstream.settings
  const breaker = yield* downstream.breaker.state
  return json({ ...settings, breaker: breaker._tag })
})

const readDownstreamPatch = Body.json(DownstreamPatch)

const configureDownstream = Effect.gen(function*() {
  const patch = yield* readDownstreamPatch
  const downstream = yield* Downstream
  yield* downstream.configure(patch)
  return yield* downstreamState
})

type Handler<E = Invalid | TooLarge | QueueFull | ShuttingDown> = HttpApp.Default<E, JobStore.JobStore | Jobs | Downstream | Lifecycle.Lifecycle>

interface Route {
  readonly path: string
  readonly methods: Readonly<Record<string, Handler>>
}

const routes: ReadonlyArray<Route> = [
  { path: "/jobs", methods: { POST: submitJob } },
  { path: "/jobs/:id", methods: { GET: getJob } },
  { path: "/livez", methods: { GET: alive } },
  { path: "/healthz", methods: { GET: alive } },
  { path: "/readyz", methods: { GET: readyz } },
  { path: "/metrics", methods: { GET: Prometheus.metricsApp } },
  { path: "/admin/downstream", methods: { GET: downstreamState, PUT: configureDownstream } }
]

/** The route pattern of a path with an id in it (`/jobs/abc` → `/jobs/:id`); other paths are their own. */
const patternOf = (path: string): string =>
  path.startsWith("/jobs/") && path.length > "/jobs/".length && path.indexOf("/", "/jobs/".length) === -1
    ? "/jobs/:id"
    : path

const routePatterns = new Set(routes.map((route) => route.path))

/** The route a request matches (`/jobs/:id`), for its span; undefined for a path no route has. */
export const routeOf = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const query = request.url.indexOf("?")
  const route = patternOf(query < 0 ? request.url : request.url.slice(0, query))
  return routePatterns.has(route) ? route : undefined
}

/** Who a client is for the per-client rate limit: its `x-client-id` header, else its address. */
const clientOf = (request: HttpServerRequest.HttpServerRequest) =>
  request.headers["x-client-id"] ?? Option.getOrUndefined(request.remoteAddress) ?? "unknown"

/** Builds the app; its middleware state (rate-limit keys, permits) lives as long as the Scope. */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const perClient = yield* Middleware.rateLimit({
      name: "http-per-client",
      limit: settings.rateLimit,
      per: settings.rateLimitPer,
      onLimit: "reject",
      key: clientOf
    })
    const guarded = withMiddleware(Middleware.stack(
      perClient,
      yield* Middleware.loadShed(),
      yield* Middleware.concurrencyLimit({ max: settings.maxConcurrentRequests, name: "http" }),
      yield* Middleware.timeout({ after: settings.requestTimeout })
    ))
    const table = new Map<string, Readonly<Record<string, Handler<never>>>>()
    for (const route of routes) {
      const methods: Record<string, Handler<never>> = {}
      for (const [method, handler] of Object.entries(route.methods)) {
        methods[method] = HttpMetrics.measured(route.path)(guarded(handler))
      }
      table.set(route.path, methods)
    }
    const notFound = (request: HttpServerRequest.HttpServerRequest) =>
      HttpMetrics.measured("unmatched")(
        Effect.succeed(errorResponse(404, "NotFound", `no route for ${request.method} ${request.url}`))
      )
    const app: Handler<never> = Effect.withFiberRuntime((fiber) => {
      const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
      const query = request.url.indexOf("?")
      const route = patternOf(query < 0 ? request.url : request.url.slice(0, query))
      const methods = table.get(route)
      if (methods === undefined) return notFound(request)
      const handler = methods[request.method]
      if (handler !== undefined) return handler
      const allowed = Object.keys(methods).join(", ")
      return HttpMetrics.measured(route)(Effect.succeed(
        errorResponse(405, "MethodNotAllowed", `${request.method} is not allowed on ${route}`, { allow: allowed })
      ))
    })
    return app
  })
