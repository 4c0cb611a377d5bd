/**
 * The job server: `npm start`. An HTTP job service composed from Keel's public API.
 *
 * Layers, in dependency order: the JobStore (embedded, bounded), the simulated downstream with its client
 * stack, the worker pool, and the draining HTTP server serving the app. With `JOB_QUEUE=redis` the queue and
 * the store are on Redis instead, shared by every job-server process pointed at it, and the workers consume
 * the shared queue. On SIGTERM or SIGINT readiness
 * turns 503, the pre-stop delay passes, the server stops accepting and finishes its requests while the
 * pool drains its jobs, then the shutdown report is logged and the process exits with Lifecycle's code.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Random from "effect/Random"
import { MemoryJobStore } from "keel/memory"
import { DrainingHttpServer, runMain } from "keel/node"
import { Otel } from "keel/otel"
import * as App from "./app.js"
import { type Settings, settings } from "./config.js"
import * as Downstream from "./downstream.js"
import * as Jobs from "./jobs.js"

/**
 * The runner and where jobs and records live: the process itself, or the Redis it shares with others.
 * keel/redis (and with it ioredis) is loaded only for the Redis backend, so the embedded default starts
 * without either.
 */
const jobsLayer = (config: Settings) => {
  if (config.jobQueue === "memory") {
    return Effect.succeed(
      Jobs.layer(config).pipe(Layer.provideMerge(MemoryJobStore.layer({ capacity: config.storeCapacity })))
    )
  }
  const redis = { url: config.redisUrl }
  return Effect.map(Effect.promise(() => import("keel/redis")), ({ RedisJobQueue, RedisJobStore }) =>
    Jobs.sharedLayer(config).pipe(
      Layer.provideMerge(RedisJobStore.layer({ redis, name: config.queueName, capacity: config.storeCapacity })),
      Layer.provideMerge(RedisJobQueue.layer({
        redis,
        name: config.queueName,
        capacity: config.queueCapacity,
        leaseDuration: config.jobLease,
        maxDeliveries: config.jobMaxDeliveries
      }))
    ))
}

const program = Effect.gen(function*() {
  const config = yield* settings
  const jobs = yield* jobsLayer(config)
  const services = jobs.pipe(Layer.provideMerge(Downstream.layer(config)))
  const server = Layer.scopedDiscard(Effect.gen(function*() {
    const app = yield* App.make(config)
    yield* HttpServer.serve(app).pipe(Layer.build)
    const { address } = yield* DrainingHttpServer.DrainingHttpServer
    yield* Effect.logInfo(
      `job server listening on http://${address.host}:${address.port} ` +
        `(${config.workers} workers, ${config.jobQueue === "memory" ? "embedded" : `${config.redisUrl} "${config.queueName}"`} ` +
        `queue ${config.queueCapacity}, drain deadline ${Duration.format(config.drainTimeout)})`
    )
  })).pipe(
    Layer.provide(DrainingHttpServer.layer({
      port: config.port,
      host: config.host,
      maxBodySize: config.maxBodyBytes,
      route: App.routeOf
    })),
    Layer.provide(services)
  )
  const seeded = config.seed._tag === "Some" ? Layer.setRandom(Random.make(config.seed.value)) : Layer.empty
  yield* Layer.launch(Layer.provide(server, seeded)).pipe(Logger.withMinimumLogLevel(config.logLevel))
})

// Traces (the requests, the jobs and the shutdown) leave over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set;
// otherwise nothing is traced.
const lifecycleOptions = Effect.map(settings, (config) => ({
  drainTimeout: config.drainTimeout,
  preStopDelay: config.preStopDelay,
  tracing: Otel.fromEnv({ serviceName: "job-server" })
}))

Effect.runPromise(Effect.either(lifecycleOptions)).then((options) => {
  if (options._tag === "Left") {
    process.stderr.write(`job-server: ${options.left}\n`)
    process.exit(2)
  }
  runMain(program, options.right)
})
