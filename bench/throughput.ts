/**
 * Throughput of no-op jobs: how much a job costs in the pool's own machinery (queueing, outcome bookkeeping,
 * metrics), with nothing else to hide it.
 *
 *   (a) Keel's WorkerPool: capacity 1024, 4 workers, handler `() => Effect.void`, one producer fiber calling
 *       `pool.submit` N times, then `pool.awaitIdle`;
 *   (b) p-queue, concurrency 4: N no-op async functions added, then `onIdle()`; the usual Node choice;
 *   (c) the loop one would write by hand in Effect: `Queue.bounded(1024)`, 4 consumer fibers doing
 *       `Effect.forever(take → no-op → count)`, one producer offering N times;
 *   (c′) for information, the same loop without `Effect.forever`, which yields to the scheduler after every
 *       iteration: this is the real floor of Effect's Queue, and shows what that yield costs.
 *
 * Targets: WorkerPool ≥ 1× p-queue, and ≥ 0.8× the hand-written loop (the pool's guarantees may cost at most
 * 20 %). After one warm-up run of each, the contenders alternate for BENCH_REPETITIONS rounds (default 5), so drift
 * on the machine hits them alike; the median jobs/s of each is reported. N is BENCH_JOBS (default 60 000,
 * so that a WorkerPool run takes 1-3 s on a small 2-core machine).
 */
import { Deferred, Effect, Exit, Fiber, Queue } from "effect"
import { Lifecycle, WorkerPool } from "keel"
import PQueue from "p-queue"
import { collectGarbage, finish, median, perSecond, ratio, section, verdict } from "./lib.js"
import type { Row } from "./lib.js"

const jobs = Number(process.env["BENCH_JOBS"] ?? 60_000)
const repetitions = Number(process.env["BENCH_REPETITIONS"] ?? 5)
const capacity = 1024
const workers = 4

/** One producer submitting `jobs` times, through whatever `submit` is, with the same loop for every contender. */
const produce = <E>(submit: () => Effect.Effect<unknown, E>) => {
  let submitted = 0
  return Effect.whileLoop({ while: () => submitted < jobs, body: () => (submitted++, submit()), step: () => {} })
}

/** Jobs per second for a run of `jobs` that started at `startedAt` (a `performance.now()`) and just ended. */
const rateSince = (startedAt: number) => jobs / ((performance.now() - startedAt) / 1000)

/** Times `body` only, not the setup around it; the result is jobs per second. */
const timed = <E, R>(body: Effect.Effect<void, E, R>) =>
  Effect.suspend(() => {
    const startedAt = performance.now()
    return Effect.map(body, () => rateSince(startedAt))
  })

const workerPool: Effect.Effect<number> = Effect.gen(function*() {
  const pool = yield* WorkerPool.make({ name: "bench", capacity, workers, handler: () => Effect.void })
  return yield* timed(Effect.zipRight(produce(() => pool.submit(undefined)), pool.awaitIdle))
}).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" })), Effect.orDie)

const pQueue = async (): Promise<number> => {
  const queue = new PQueue({ concurrency: workers })
  const noop = async () => {}
  const startedAt = performance.now()
  for (let index = 0; index < jobs; index++) void queue.add(noop)
  await queue.onIdle()
  return rateSince(startedAt)
}

/** Repeats an effect forever without yielding between iterations (the runtime still yields every 2048 ops). */
const loopWithoutYield = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<never, E, R> => {
  const loop: Effect.Effect<never, E, R> = Effect.flatMap(self, () => loop)
  return loop
}

const handWritten = (repeat: typeof loopWithoutYield): Effect.Effect<number> => Effect.gen(function*() {
  const queue = yield* Queue.bounded<number>(capacity)
  const done = yield* Deferred.make<void>()
  let consumed = 0
  const consumer = repeat(Effect.flatMap(Queue.take(queue), () =>
    Effect.flatMap(Effect.void, () =>
      Effect.sync(() => {
        if (++consumed === jobs) Deferred.unsafeDone(done, Exit.void)
      }))))
  const consumers = yield* Effect.forEach(Array.from({ length: workers }), () => Effect.fork(consumer))
  const rate = yield* timed(Effect.zipRight(produce(() => Queue.offer(queue, 0)), Deferred.await(done)))
  yield* Fiber.interruptAll(consumers)
  return rate
})

interface Contender {
  readonly name: string
  readonly run: () => Promise<number>
}

const pool: Contender = { name: "WorkerPool", run: () => Effect.runPromise(workerPool) }
const pq: Contender = { name: "p-queue", run: pQueue }
const loop: Contender = { name: "hand-written loop", run: () => Effect.runPromise(handWritten(Effect.forever)) }
const loopNoYield: Contender = {
  name: "hand-written loop, no yield",
  run: () => Effect.runPromise(handWritten(loopWithoutYield))
}
const contenders = [pool, pq, loop, loopNoYield]

const runOnce = (contender: Contender) => {
  collectGarbage()
  return contender.run()
}

section(`throughput: ${jobs.toLocaleString("en-US")} no-op jobs, ${workers} workers, ${repetitions} rounds after a warm-up`)
for (const contender of contenders) console.log(`warm-up ${contender.name}: ${perSecond(await runOnce(contender))}`)
const samples = new Map(contenders.map((contender) => [contender, [] as Array<number>]))
for (let round = 1; round <= repetitions; round++) {
  const line: Array<string> = []
  for (const contender of contenders) {
    const rate = await runOnce(contender)
    samples.get(contender)!.push(rate)
    line.push(`${contender.name} ${perSecond(rate)}`)
  }
  console.log(`round ${round}: ${line.join(", ")}`)
}

const medianOf = (contender: Contender) => median(samples.get(contender)!)
const ratios = [
  { metric: "WorkerPool / p-queue", value: medianOf(pool) / medianOf(pq), target: 1 },
  { metric: "WorkerPool / hand-written loop", value: medianOf(pool) / medianOf(loop), target: 0.8 },
  { metric: "WorkerPool / hand-written loop, no yield", value: medianOf(pool) / medianOf(loopNoYield), target: undefined }
]
console.log()
for (const contender of contenders) console.log(`median ${contender.name}: ${perSecond(medianOf(contender))}`)
for (const { metric, value, target } of ratios) {
  const judged = target === undefined ? "information only" : `target ≥ ${target}×: ${verdict(value >= target)}`
  console.log(`${metric}: ${ratio(value)} (${judged})`)
}

const rows: Array<Row> = [
  ...contenders.map((contender) => ({
    benchmark: "throughput",
    metric: `${contender.name}, median`,
    value: perSecond(medianOf(contender)),
    target: ""
  })),
  ...ratios.map(({ metric, value, target }) => ({
    benchmark: "throughput",
    metric,
    value: ratio(value),
    ...(target === undefined ? { target: "" } : { target: `≥ ${target}×`, met: value >= target })
  }))
]
await finish("throughput", rows)
