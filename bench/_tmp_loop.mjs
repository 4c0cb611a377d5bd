import { Deferred, Effect, Exit, Fiber, Queue } from "effect"
const jobs = 200_000
const prog = Effect.gen(function*() {
  const queue = yield* Queue.bounded(1024)
  const done = yield* Deferred.make()
  let consumed = 0
  const consumer = Effect.forever(Effect.flatMap(Queue.take(queue), () => Effect.sync(() => { if (++consumed === jobs) Deferred.unsafeDone(done, Exit.void) })))
  const consumers = yield* Effect.forEach(Array.from({ length: Number(process.env["W"] ?? 4) }), () => Effect.fork(consumer))
  const start = performance.now()
  let i = 0
  yield* Effect.whileLoop({ while: () => i < jobs, body: () => (i++, Queue.offer(queue, 0)), step: () => {} })
  const mid = performance.now()
  yield* Deferred.await(done)
  const end = performance.now()
  console.log("produce", (mid-start).toFixed(0), "total", (end-start).toFixed(0), "rate", Math.round(jobs/((end-start)/1000)))
  yield* Fiber.interruptAll(consumers)
})
for (let r = 0; r < 3; r++) await Effect.runPromise(prog)
