/**
 * The worker-pool CLI: a producer feeding a bounded queue, N workers running jobs of random duration
 * that fail at a configurable rate, and Ctrl+C that lets in-flight jobs finish and prints the shutdown
 * report. Built only from Keel's public entry points ("keel", "keel/node").
 *
 *   npm run example:worker-pool -- --workers 8 --jobs 200
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import { Backoff, Lifecycle, render, ShuttingDown, type Timeout, WorkerPool } from "keel"
import { runMain } from "keel/node"
import { parseSettings, usage } from "./settings.js"
import { startProgress } from "./progress.js"

class JobFailed extends Data.TaggedError("JobFailed")<{ readonly job: number; readonly attempt: number }> {
  override get message() {
    return `job ${this.job} failed on attempt ${this.attempt}`
  }
}

const parsed = parseSettings(process.argv.slice(2))
if (parsed._tag === "Left") {
  process.stderr.write(`${parsed.left}\n\n${usage}\n`)
  process.exit(2)
}
const settings = parsed.right

const runJob = (job: number, context: WorkerPool.JobContext) =>
  Effect.gen(function*() {
    // A call stuck where interruption cannot reach it (a blocking native call, an uninterruptible region).
    if (job === settings.hangJob) return yield* Effect.uninterruptible(Effect.never)
    const duration = yield* Random.nextIntBetween(settings.minMs, settings.maxMs + 1)
    yield* Effect.sleep(Duration.millis(duration))
    const roll = yield* Random.next
    if (roll < settings.failureRate) return yield* new JobFailed({ job, attempt: context.attempt })
  })

const program = Effect.gen(function*() {
  const pool = yield* WorkerPool.make({
    name: "jobs",
    capacity: settings.capacity,
    workers: settings.workers,
    handler: runJob,
    retry: Backoff.exponential({
      base: "100 millis",
      max: "2 seconds",
      maxAttempts: settings.retries + 1,
      retryOn: (error: JobFailed | Timeout) => error._tag === "JobFailed" || Backoff.isRetryable(error)
    }),
    onShutdown: settings.policy,
    deadLetter: (failed) =>
      Effect.logWarning(`job ${failed.job.id} failed after ${failed.attempts} attempt(s): ${render(failed.cause)}`)
  })
  yield* startProgress(pool)
  yield* Effect.log(
    `worker pool: ${settings.workers} workers, queue capacity ${settings.capacity}, ` +
      (settings.jobs === 0 ? "jobs until Ctrl+C" : `${settings.jobs} jobs`) + ` (Ctrl+C drains and stops)`
  )

  let produced = 0
  const produce = Effect.suspend(() => pool.submit(++produced)).pipe(
    Effect.zipRight(settings.rate > 0 ? Effect.sleep(Duration.millis(1000 / settings.rate)) : Effect.void)
  )
  const stopped = yield* Effect.whileLoop({
    while: () => settings.jobs === 0 || produced < settings.jobs,
    body: () => produce,
    step: () => {}
  }).pipe(
    Effect.as(false),
    Effect.catchTag("ShuttingDown", (error: ShuttingDown) => Effect.as(Effect.log(`producer stopped: ${error.message}`), true))
  )
  if (stopped) return yield* Lifecycle.awaitDraining.pipe(Effect.zipRight(Effect.never))
  yield* pool.awaitIdle
  const stats = yield* pool.stats
  yield* Effect.log(`all ${stats.accepted} jobs done: ${stats.completed} completed, ${stats.failed} failed, ${stats.retried} retries`)
}).pipe(Effect.scoped)

const seeded = settings.seed === undefined ? program : Effect.withRandom(program, Random.make(settings.seed))

runMain(seeded, settings.drainTimeout === undefined ? {} : { drainTimeout: settings.drainTimeout })
