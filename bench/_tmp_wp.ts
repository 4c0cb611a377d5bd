import { Effect } from "effect"
import { Lifecycle, WorkerPool } from "keel"
const jobs = 100_000
const run = Effect.gen(function*() {
  const pool = yield* WorkerPool.make({ name: "bench", capacity: 1024, workers: 4, handler: () => Effect.void })
  const start = performance.now()
  let i = 0
  yield* Effect.whileLoop({ while: () => i < jobs, body: () => (i++, pool.submit(undefined)), step: () => {} })
  yield* pool.awaitIdle
  console.log("rate", Math.round(jobs / ((performance.now() - start) / 1000)))
}).pipe(Effect.scoped, Effect.provide(Lifecycle.layer({ drainTimeout: "5 seconds" })), Effect.orDie)
for (let r = 0; r < 3; r++) await Effect.runPromise(run)
