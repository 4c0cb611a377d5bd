/**
 * WorkerPool.consume over a shared queue (the JobQueue contract, here its memory backend on the TestClock):
 * completed jobs are acked, failed ones dead-lettered with their rendered cause, retries stay within one
 * delivery, an outcome that cannot be recorded is not acked (the job runs again), a running job's lease is
 * renewed so it is never delivered twice, a job whose lease is lost is interrupted and runs again, and the drain
 * stops taking, lets in-flight jobs finish, and at the deadline releases what still runs so the queue has it
 * ready again at once.
 */
import { describe, expect, it } from "@effect/vitest"
import { Data, Deferred, Duration, Effect, Fiber, Schedule, TestClock } from "effect"
import { Lifecycle, WorkerPool } from "keel"
import type { JobQueue } from "keel/services"
import * as MemoryJobQueue from "../../layers/memory/JobQueue.js"
import { recordingTracer } from "../support/recordingTracer.js"

class Refused extends Data.TaggedError("Refused")<{ readonly attempt: number }> {}

const withLifecycle = Effect.provide(Lifecycle.layer({ drainTimeout: "10 seconds" }))

const queueOf = (leaseSeconds = 30) =>
  MemoryJobQueue.make({ capacity: 100, leaseDuration: Duration.seconds(leaseSeconds), maxDeliveries: 5 })

const offerAll = (queue: JobQueue.JobQueueService, payloads: ReadonlyArray<JobQueue.Json>) =>
  Effect.forEach(payloads, (payload, index) => queue.offer(payload, { id: `job-${index + 1}` }))

/** Records every outcome as `id:tag[:reason]`. */
const outcomeLog = () => {
  const outcomes: Array<string> = []
  const onOutcome = (outcome: WorkerPool.Outcome<JobQueue.Json>) =>
    Effect.sync(() => {
      outcomes.push(
        outcome._tag === "Completed"
          ? `${outcome.job.id}:completed`
          : outcome._tag === "Failed"
          ? `${outcome.failure.job.id}:failed`
          : `${outcome.unfinished.job.id}:unfinished:${outcome.unfinished.reason}`
      )
    })
  return { outcomes, onOutcome }
}

describe("WorkerPool.consume", () => {
  it.scoped("runs every job once, acks it, and the queue is empty afterwards", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const { onOutcome, outcomes } = outcomeLog()
      const seen: Array<string> = []
      yield* offerAll(queue, [1, 2, 3, 4, 5])
      const consumer = yield* WorkerPool.consume(queue, {
        workers: 2,
        handler: (payload, job) =>
          Effect.as(Effect.sleep("1 second"), payload).pipe(
            Effect.tap(() => seen.push(`${job.id}@${job.delivery}`))
          ),
        onOutcome
      })
      yield* TestClock.adjust("3 seconds")
      expect(seen.sort()).toEqual(["job-1@1", "job-2@1", "job-3@1", "job-4@1", "job-5@1"])
      expect(outcomes.sort()).toEqual([1, 2, 3, 4, 5].map((n) => `job-${n}:completed`))
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
      const stats = yield* consumer.stats
      expect([stats.accepted, stats.completed, stats.inFlight, stats.accepting]).toEqual([5, 5, 0, true])
    }).pipe(withLifecycle))

  it.scoped("a job that fails after its retries is dead-lettered in the queue with its rendered cause", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const { onOutcome, outcomes } = outcomeLog()
      yield* offerAll(queue, ["fails", "recovers"])
      yield* WorkerPool.consume(queue, {
        workers: 1,
        retry: Schedule.recurs(2),
        handler: (payload, job) =>
          payload === "fails" || job.attempt < 3 ? Effect.fail(new Refused({ attempt: job.attempt })) : Effect.void,
        onOutcome
      })
      yield* TestClock.adjust(0)
      expect(outcomes).toEqual(["job-1:failed", "job-2:completed"])
      const letters = yield* queue.deadLetters
      expect(letters.map((letter) => [letter.id, letter.deliveries])).toEqual([["job-1", 1]])
      expect(letters[0]!.reason).toContain("Refused")
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 1 })
    }).pipe(withLifecycle))

  it.scoped("a job running three times longer than its lease keeps it: renewed, never delivered twice", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf(1)
      const { onOutcome, outcomes } = outcomeLog()
      const deliveries: Array<number> = []
      yield* offerAll(queue, ["long"])
      yield* WorkerPool.consume(queue, {
        workers: 2,
        handler: (_, job) => Effect.zipRight(Effect.sync(() => deliveries.push(job.delivery)), Effect.sleep("3 seconds")),
        onOutcome
      })
      for (let step = 0; step < 40; step++) yield* TestClock.adjust("100 millis")
      expect(deliveries).toEqual([1])
      expect(outcomes).toEqual(["job-1:completed"])
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
    }).pipe(withLifecycle))

  it.scoped("a job whose lease is lost is interrupted, and runs again on its next delivery; the worker goes on taking", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf(1)
      // A consumer that cannot renew: its leases expire while the job runs.
      const forgetful: WorkerPool.Source<JobQueue.Json> = { ...queue, renew: () => Effect.void }
      const { onOutcome, outcomes } = outcomeLog()
      const finished: Array<string> = []
      yield* offerAll(queue, ["slow at first"])
      const consumer = yield* WorkerPool.consume(forgetful, {
        workers: 1,
        handler: (_, job) =>
          Effect.sleep(job.id === "job-1" && job.delivery === 1 ? "5 seconds" : "100 millis").pipe(
            Effect.zipRight(Effect.sync(() => finished.push(`${job.id}@${job.delivery}`)))
          ),
        onOutcome
      })
      for (let step = 0; step < 30; step++) yield* TestClock.adjust("100 millis")
      expect(finished).toEqual(["job-1@2"])
      expect(outcomes).toEqual(["job-1:unfinished:leaseLost", "job-1:completed"])
      // The one worker slot still takes and runs jobs after the interruption.
      yield* queue.offer("next", { id: "job-2" })
      yield* queue.offer("and the next", { id: "job-3" })
      for (let step = 0; step < 5; step++) yield* TestClock.adjust("100 millis")
      expect(finished).toEqual(["job-1@2", "job-2@1", "job-3@1"])
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
      expect(yield* consumer.stats).toMatchObject({ workers: 1, inFlight: 0, completed: 3, unfinished: 1 })
    }).pipe(withLifecycle))

  it.scoped("an outcome that cannot be recorded is not acked: the lease is released and the job runs again", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const runs: Array<string> = []
      let recordFails = true
      yield* offerAll(queue, ["once recorded"])
      yield* WorkerPool.consume(queue, {
        workers: 1,
        handler: (_, job) => Effect.sync(() => runs.push(`${job.id}@${job.delivery}`)),
        onOutcome: () =>
          Effect.suspend(() => {
            if (!recordFails) return Effect.void
            recordFails = false
            return Effect.fail(new Refused({ attempt: 0 }))
          })
      })
      yield* TestClock.adjust(0)
      expect(runs).toEqual(["job-1@1", "job-1@2"])
      expect(yield* queue.depth).toEqual({ ready: 0, leased: 0, delayed: 0, dead: 0 })
    }).pipe(withLifecycle))

  it.effect("the drain stops taking, lets in-flight jobs finish, and leaves the rest ready in the queue", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const finished: Array<string> = []
      const result = yield* Effect.gen(function*() {
        yield* offerAll(queue, [1, 2, 3, 4])
        const consumer = yield* WorkerPool.consume(queue, {
          workers: 2,
          handler: (_, job) => Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => finished.push(job.id)))
        })
        yield* TestClock.adjust("500 millis")
        const shutdown = yield* Effect.fork(consumer.shutdown)
        yield* TestClock.adjust("1 second")
        expect((yield* consumer.stats).accepting).toBe(false)
        return yield* Fiber.join(shutdown)
      }).pipe(Effect.scoped)
      expect(finished.sort()).toEqual(["job-1", "job-2"])
      expect(result).toEqual({ durationMs: 500, finished: 2, unfinished: [] })
      expect(yield* queue.depth).toEqual({ ready: 2, leased: 0, delayed: 0, dead: 0 })
    }).pipe(Effect.scoped, withLifecycle))

  it.effect("at the deadline, jobs still running are interrupted and released: ready again at once", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const { onOutcome, outcomes } = outcomeLog()
      const handedBack: Array<string> = []
      const started = yield* Deferred.make<void>()
      const draining = yield* Effect.gen(function*() {
        yield* offerAll(queue, ["stuck"])
        yield* WorkerPool.consume(queue, {
          workers: 1,
          handler: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never),
          onOutcome,
          handBack: (jobs) => Effect.sync(() => handedBack.push(...jobs.map((item) => `${item.job.id}:${item.reason}`)))
        })
        yield* Deferred.await(started)
        expect(yield* queue.depth).toEqual({ ready: 0, leased: 1, delayed: 0, dead: 0 })
      }).pipe(Effect.scoped, Effect.fork) // the Scope closes here: the drain waits 10 s for the stuck job
      for (let second = 0; second <= 10; second++) yield* TestClock.adjust("1 second")
      yield* Fiber.join(draining)
      expect(outcomes).toEqual(["job-1:unfinished:interrupted"])
      expect(handedBack).toEqual(["job-1:interrupted"])
      expect(yield* queue.depth).toEqual({ ready: 1, leased: 0, delayed: 0, dead: 0 })
    }).pipe(Effect.scoped, withLifecycle))

  it.effect("rejects a consumer without workers as a defect at construction", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const exit = yield* Effect.exit(Effect.scoped(WorkerPool.consume(queue, { workers: 0, handler: () => Effect.void })))
      expect(exit._tag).toBe("Failure")
    }).pipe(Effect.scoped, withLifecycle))
})

describe("WorkerPool.consume: what a job carries from its offer", () => {
  it.scoped("a job offered with a deadline that passed before a worker took it is dead-lettered unstarted", () =>
    Effect.gen(function*() {
      const queue = yield* queueOf()
      const { onOutcome, outcomes } = outcomeLog()
      const started: Array<string> = []
      yield* queue.offer("slow", { id: "slow" })
      yield* queue.offer("hurried", { id: "hurried", deadline: "2 seconds" })
      yield* queue.offer("patient", { id: "patient", deadline: "1 minute" })
      yield* WorkerPool.consume(queue, {
        workers: 1,
        handler: (payload) => Effect.zipRight(Effect.sync(() => started.push(String(payload))), Effect.sleep("3 seconds")),
        onOutcome
      })
      yield* TestClock.adjust("10 seconds")
      expect(started).toEqual(["slow", "patient"])
      expect(outcomes).toEqual(["slow:completed", "hurried:failed", "patient:completed"])
      const [letter] = yield* queue.deadLetters
      expect(letter?.id).toBe("hurried")
      expect(letter?.reason).toContain("deadline passed before it started")
    }).pipe(withLifecycle))

  it.scoped("with tracing on, a job's run continues the trace of the span that offered it", () => {
    const recording = recordingTracer()
    return Effect.gen(function*() {
      const queue = yield* MemoryJobQueue.make({ name: "mail", capacity: 10, leaseDuration: "30 seconds", maxDeliveries: 3 })
      yield* WorkerPool.consume(queue, { name: "mailers", workers: 1, handler: () => Effect.void })
      yield* queue.offer("hello", { id: "mail-1" }).pipe(Effect.withSpan("POST /mail"))
      yield* TestClock.adjust("1 second")
      const [request] = recording.named("POST /mail")
      const [send] = recording.named("send mail")
      const [run] = recording.named("process mailers")
      expect([send!.traceId, run!.traceId]).toEqual([request!.traceId, request!.traceId])
      expect(run!.links.map((link) => link.span.spanId)).toEqual([send!.spanId])
      expect(run!.attributes.get("keel.job.delivery")).toBe(1)
    }).pipe(Effect.withTracer(recording.tracer), withLifecycle)
  })
})
