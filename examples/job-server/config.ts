/**
 * The job server's settings, read from environment variables through Effect `Config`. Every setting has
 * a default, so `npm start` runs with none; a malformed value stops the start with a message naming the
 * variable (never a server running on NaN workers).
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as LogLevel from "effect/LogLevel"

const positiveInt = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.withDefault(fallback),
    Config.validate({ message: `${name} must be a positive integer`, validation: (value) => value >= 1 })
  )

const rate = (name: string, fallback: number) =>
  Config.number(name).pipe(
    Config.withDefault(fallback),
    Config.validate({ message: `${name} must be between 0 and 1`, validation: (value) => value >= 0 && value <= 1 })
  )

const duration = (name: string, fallback: Duration.DurationInput) =>
  Config.duration(name).pipe(Config.withDefault(Duration.decode(fallback)))

const fields = Config.all({
  /** 0 picks a free port (the address is logged). */
  port: Config.integer("PORT").pipe(
    Config.withDefault(3000),
    Config.validate({ message: "PORT must be 0..65535", validation: (value) => value >= 0 && value <= 65535 })
  ),
  host: Config.string("HOST").pipe(Config.withDefault("127.0.0.1")),
  /** 0 (with JOB_QUEUE=redis): this process takes requests only, and other processes on the queue run the jobs. */
  workers: Config.integer("WORKERS").pipe(
    Config.withDefault(4),
    Config.validate({ message: "WORKERS must be an integer ≥ 0", validation: (value) => value >= 0 })
  ),
  /** `memory`: the embedded queue and store (no service needed); `redis`: shared by every process on REDIS_URL. */
  jobQueue: Config.literal("memory", "redis")("JOB_QUEUE").pipe(Config.withDefault("memory" as const)),
  redisUrl: Config.string("REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379")),
  /** Processes with the same name on one Redis share their jobs and records. */
  queueName: Config.string("QUEUE_NAME").pipe(Config.withDefault("jobs")),
  jobLease: duration("JOB_LEASE", "30 seconds"),
  jobMaxDeliveries: positiveInt("JOB_MAX_DELIVERIES", 5),
  queueCapacity: positiveInt("QUEUE_CAPACITY", 100),
  storeCapacity: positiveInt("STORE_CAPACITY", 10_000),
  drainTimeout: duration("DRAIN_TIMEOUT", "20 seconds"),
  preStopDelay: duration("PRE_STOP_DELAY", Duration.zero),
  maxBodyBytes: positiveInt("MAX_BODY_BYTES", 1024 * 1024),
  requestTimeout: duration("REQUEST_TIMEOUT", "10 seconds"),
  rateLimit: positiveInt("RATE_LIMIT", 1000),
  rateLimitPer: duration("RATE_LIMIT_PER", "1 second"),
  maxConcurrentRequests: positiveInt("MAX_CONCURRENT_REQUESTS", 256),
  jobTimeout: duration("JOB_TIMEOUT", "5 minutes"),
  jobMaxAttempts: positiveInt("JOB_MAX_ATTEMPTS", 5),
  retryBase: duration("JOB_RETRY_BASE", "100 millis"),
  retryMax: duration("JOB_RETRY_MAX", "10 seconds"),
  downstreamFailureRate: rate("DOWNSTREAM_FAILURE_RATE", 0),
  downstreamLatency: duration("DOWNSTREAM_LATENCY", "20 millis"),
  downstreamTimeout: duration("DOWNSTREAM_TIMEOUT", "1 second"),
  breakerOpenFor: duration("BREAKER_OPEN_FOR", "5 seconds"),
  seed: Config.option(Config.integer("SEED")),
  logLevel: Config.logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info))
})

export const settings = fields.pipe(
  Config.validate({
    message: "WORKERS=0 needs JOB_QUEUE=redis: the embedded queue has no other process to run its jobs",
    validation: (config) => config.workers > 0 || config.jobQueue === "redis"
  })
)

export type Settings = Config.Config.Success<typeof settings>
