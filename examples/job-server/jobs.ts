/**
 * The job kinds the server runs, and the worker pool that runs them.
 *
 * Each kind exercises one pattern: `sleep` holds a worker (what a drain waits for), `flaky` fails at
 * random and is retried by the pool with Keel Backoff (full jitter) until it succeeds or is dead-lettered
 * with its attempts, `downstream` calls a dependency through timeout, circuit breaker and budgeted retry,
 * and `noop` measures the server itself. A request is validated with Schema before anything is stored;
 * every accepted job's record follows the pool's one outcome for it (completed, failed, unfinished).
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import { Backoff, Lifecycle, render, ShuttingDown, Unavailable, withContext, WorkerPool } from "keel"
import type { CircuitOpen, QueueFull, Timeout } from "keel"
import { JobQueue, JobStore } from "keel/services"
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

type JobError = Unavailable | Timeout | CircuitOpen

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

/**
 * The record a pool outcome leaves: what `GET /jobs/:id` shows once the job is over. With a shared queue an
 * unfinished job is not over — its lease went back to the queue and another process runs it — so its record
 * says queued again rather than a final `unfinished`.
 */
const recordedState = (
  outcome: WorkerPool.Outcome<unknown>,
  shared: boolean
): readonly [string, JobStore.JobState & { attempts: number }] => {
  switch (outcome._tag) {
    case "Completed":
      return [outcome.job.id, { _tag: "Completed", result: outcome.result, attempts: outcome.attempts }]
    case "Failed":
      return [
        outcome.failure.job.id,
        { _tag: "Failed", error: render(outcome.failure.cause), attempts: outcome.failure.attempts }
      ]
    case "Unfinished":
      return [
        outcome.unfinished.job.id,
        shared
          ? { _tag: "Queued", attempts: outcome.unfinished.attempts }
          : { _tag: "Unfinished", reason: outcome.unfinished.reason, attempts: outcome.unfinished.attempts }
      ]
  }
}

/**
 * A job's start written to the store. A store that cannot be reached does not fail (or retry) the job itself:
 * the change is logged and lost, and `GET /jobs/:id` keeps showing the record's earlier state.
 */
const recordState = (store: JobStore.JobStoreService, id: string, state: JobStore.JobState) =>
  Effect.catchTag(store.update(id, state), "StoreUnavailable", (error) =>
    Effect.logWarning(`job ${id}: state ${state._tag} not recorded: ${error.message}`))

/** How the app hands a validated job to the workers: the pool's own queue, or the queue processes share. */
export interface JobIntake {
  readonly trySubmit: (
    job: JobRequest,
    options: { readonly id: string }
  ) => Effect.Effect<string, QueueFull | ShuttingDown | JobQueue.QueueUnavailable>
}

export class Jobs extends Context.Tag("job-server/Jobs")<Jobs, JobIntake>() {}

export const poolName = "jobs"

/** What both runners share: timeout, Backoff retries, and every job's progress and outcome in the JobStore. */
const runnerOptions = <A>(
  settings: Settings,
  store: JobStore.JobStoreService,
  shared: boolean,
  toRequest: (payload: A) => Effect.Effect<JobRequest>
): WorkerPool.ConsumeOptions<A, JobError, Downstream> => ({
  name: poolName,
  workers: settings.workers,
  timeout: settings.jobTimeout,
  retry: Backoff.exponential({
    base: settings.retryBase,
    max: settings.retryMax,
    jitter: "full",
    maxAttempts: settings.jobMaxAttempts
  }),
  handler: (payload, context) =>
    Effect.logDebug(`job ${context.id} started: delivery ${context.delivery}, attempt ${context.attempt}`).pipe(
      Effect.zipRight(recordState(store, context.id, { _tag: "Running", attempt: context.attempt })),
      Effect.zipRight(toRequest(payload)),
      Effect.flatMap((job) => run(job, context.attempt))
    ),
  // A store that cannot be reached fails the observation: with the shared queue the job is then not acked but
  // released, and runs again, so that no job ends acked with its record still `running`.
  onOutcome: (outcome) => {
    const [id, state] = recordedState(outcome, shared)
    return Effect.zipRight(
      store.update(id, state),
      Effect.logDebug(`job ${id} ${state._tag.toLowerCase()} after ${state.attempts} attempt(s)`)
    )
  }
})

/** The embedded runner: a WorkerPool with its own bounded queue, drained on shutdown. */
export const layer = (settings: Settings) =>
  Layer.scoped(
    Jobs,
    Effect.gen(function*() {
      const store = yield* JobStore.JobStore
      const pool = yield* WorkerPool.make<JobRequest, JobError, Downstream>({
        ...runnerOptions<JobRequest>(settings, store, false, Effect.succeed),
        capacity: settings.queueCapacity,
        onShutdown: "drain"
      })
      return { trySubmit: pool.trySubmit }
    })
  )

const decodeRequest = Schema.decodeUnknown(JobRequest)

/**
 * The shared runner: workers consuming the JobQueue that every job-server process on it shares (none with
 * WORKERS=0: the process then only takes requests, and others run the jobs). A job is
 * offered to the queue (refused with QueueFull at its capacity, ShuttingDown once this process drains) and
 * may run in any process; a payload that is not a job request (written by something else) is dead-lettered.
 */
export const sharedLayer = (settings: Settings) =>
  Layer.scoped(
    Jobs,
    Effect.gen(function*() {
      const store = yield* JobStore.JobStore
      const queue = yield* JobQueue.JobQueue
      if (settings.workers > 0) {
        yield* WorkerPool.consume<JobQueue.Json, JobError, Downstream>(
          queue,
          runnerOptions(settings, store, true, (payload) => Effect.orDie(decodeRequest(payload)))
        )
      }
      const lifecycle = yield* Lifecycle.Lifecycle
      // Jobs are accepted through the pre-stop delay, as the embedded pool accepts them; once the drain
      // starts this process offers nothing more to the shared queue.
      const trySubmit: JobIntake["trySubmit"] = (job, options) =>
        Effect.zipRight(lifecycle.ensureAccepting, queue.tryOffer(job as unknown as JobQueue.Json, options))
      return { trySubmit }
    })
  )
