/**
 * The job kinds the server runs, and the worker pool that runs them.
 *
 * Each kind exercises one pattern: `sleep` holds a worker (what a drain waits for), `flaky` fails at
 * random and is retried by the pool with Keel Backoff (full jitter) until it succeeds or is dead-lettered
 * with its attempts, `downstream` calls a dependency through timeout, circuit breaker and budgeted retry,
 * and `noop` measures the server itself. A request is validated with Schema before anything is stored;
 * every accepted job's record follows the pool's one outcome for it (completed, failed, unfinished).
 */
import { Context, Duration, Effect, Layer, Random, Schema } from "effect"
import { Backoff, Middleware, render, Unavailable, withContext, WorkerPool } from "keel"
import type { Timeout, WithContext } from "keel"
import { JobStore } from "keel/services"
import type { Settings } from "./config.js"
import { Downstream } from "./downstream.js"

const milliseconds = Schema.Int.pipe(Schema.between(0, 3_600_000))

const common = {
  /** A repeated request with the same key gets the same job instead of a second one. */
  idempotencyKey: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)))
}

export const JobRequest = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("sleep"), payload: Schema.Struct({ ms: milliseconds }), ...common }),
  Schema.Struct({
    kind: Schema.Literal("flaky"),
    payload: Schema.Struct({
      /** Chance that one attempt fails. */
      failureRate: Schema.Number.pipe(Schema.between(0, 1)),
      ms: Schema.optional(milliseconds)
    }),
    ...common
  }),
  Schema.Struct({
    kind: Schema.Literal("downstream"),
    payload: Schema.Struct({ calls: Schema.optional(Schema.Int.pipe(Schema.between(1, 20))) }),
    ...common
  }),
  Schema.Struct({ kind: Schema.Literal("noop"), payload: Schema.Struct({}), ...common })
)
export type JobRequest = typeof JobRequest.Type

type JobError = Unavailable | WithContext<Unavailable | Timeout | Middleware.CircuitOpen>

const run = (job: JobRequest, attempt: number): Effect.Effect<unknown, JobError, Downstream> => {
  switch (job.kind) {
    case "sleep":
      return Effect.as(Effect.sleep(Duration.millis(job.payload.ms)), { sleptMs: job.payload.ms })
    case "flaky":
      return Effect.gen(function*() {
        yield* Effect.sleep(Duration.millis(job.payload.ms ?? 0))
        if ((yield* Random.next) < job.payload.failureRate) {
          return yield* new Unavailable({ reason: `flaky job failed on attempt ${attempt}` })
        }
        return { succeededOnAttempt: attempt }
      })
    case "downstream": {
      const calls = job.payload.calls ?? 1
      return Effect.flatMap(Downstream, (downstream) =>
        Effect.forEach(
          Array.from({ length: calls }, (_, index) => index + 1),
          (call) => withContext(`downstream call ${call} of ${calls}`)(downstream.call)
        )).pipe(Effect.map((answers) => ({ calls, answers })))
    }
    case "noop":
      return Effect.succeed(null)
  }
}

/** The record a pool outcome leaves: what `GET /jobs/:id` shows once the job is over. */
const recordedState = (outcome: WorkerPool.Outcome<JobRequest>): readonly [string, JobStore.JobState & { attempts: number }] => {
  switch (outcome._tag) {
    case "Completed":
      return [outcome.job.id, { _tag: "Completed", result: outcome.result, attempts: outcome.attempts }]
    case "Failed":
      return [
        outcome.letter.job.id,
        { _tag: "Failed", error: render(outcome.letter.cause), attempts: outcome.letter.attempts }
      ]
    case "Unfinished":
      return [
        outcome.unfinished.job.id,
        { _tag: "Unfinished", reason: outcome.unfinished.reason, attempts: outcome.unfinished.attempts }
      ]
  }
}

/**
 * A state change written to the store. A store that cannot be reached does not fail (or retry) the job itself:
 * the change is logged and lost, and `GET /jobs/:id` keeps showing the record's earlier state.
 */
const recordState = (store: JobStore.JobStoreService, id: string, state: JobStore.JobState) =>
  Effect.catchTag(store.update(id, state), "StoreUnavailable", (error) =>
    Effect.logWarning(`job ${id}: state ${state._tag} not recorded: ${error.message}`))

export class Jobs extends Context.Tag("job-server/Jobs")<Jobs, WorkerPool.WorkerPool<JobRequest>>() {}

export const poolName = "jobs"

/** The pool, writing every job's progress and single outcome to the JobStore. */
export const layer = (settings: Settings) =>
  Layer.scoped(
    Jobs,
    Effect.gen(function*() {
      const store = yield* JobStore.JobStore
      return yield* WorkerPool.make<JobRequest, JobError, Downstream>({
        name: poolName,
        capacity: settings.queueCapacity,
        workers: settings.workers,
        timeout: settings.jobTimeout,
        retry: Backoff.exponential({
          base: settings.retryBase,
          max: settings.retryMax,
          jitter: "full",
          maxAttempts: settings.jobMaxAttempts
        }),
        onShutdown: "drain",
        handler: (job: JobRequest, context) =>
          Effect.zipRight(
            recordState(store, context.id, { _tag: "Running", attempt: context.attempt }),
            run(job, context.attempt)
          ),
        onOutcome: (outcome) => {
          const [id, state] = recordedState(outcome)
          return Effect.zipRight(
            recordState(store, id, state),
            Effect.logDebug(`job ${id} ${state._tag.toLowerCase()} after ${state.attempts} attempt(s)`)
          )
        }
      })
    })
  )
