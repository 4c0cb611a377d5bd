/**
 * Live progress of the worker-pool example: one line redrawn in place on a terminal, a plain log line
 * each second otherwise (CI logs, pipes). The fiber lives in the caller's Scope, so it stops with the pool.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { WorkerPool } from "keel"

const format = (stats: WorkerPool.Stats, perSecond: number) =>
  `queued ${stats.depth} | in flight ${stats.inFlight} | done ${stats.completed} | failed ${stats.failed} | ` +
  `${perSecond.toFixed(1)} jobs/s`

export const startProgress = <A>(pool: WorkerPool.WorkerPool<A>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const onTerminal = process.stdout.isTTY === true
    const startedAt = yield* Clock.currentTimeMillis
    const draw = Effect.gen(function*() {
      const stats = yield* pool.stats
      const elapsedSeconds = ((yield* Clock.currentTimeMillis) - startedAt) / 1000
      const line = format(stats, elapsedSeconds > 0 ? (stats.completed + stats.failed) / elapsedSeconds : 0)
      if (onTerminal) process.stdout.write(`\r\x1b[2K${line}`)
      else yield* Effect.log(`progress: ${line}`)
    })
    const clearLine = Effect.sync(() => onTerminal && process.stdout.write("\r\x1b[2K"))
    yield* draw.pipe(
      Effect.repeat(Schedule.spaced(onTerminal ? "100 millis" : "1 second")),
      Effect.ensuring(clearLine),
      Effect.forkScoped
    )
  })
