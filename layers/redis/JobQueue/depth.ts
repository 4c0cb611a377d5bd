/**
 * The queue's depth, and the gauges that show it. The depth lives in Redis, shared by every process on the
 * queue, so the `keel_queue_jobs` gauges of a process are its reading of it: read by one fiber per queue every
 * `depthRefresh` (one depth script call, tried once: a failure leaves the gauges as they were until the next),
 * and whenever `depth` is called. So they are at most `depthRefresh` old while Redis answers, and every process
 * on the queue exports the same figures for it.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { JobQueue } from "keel/services"
import type { Calls, ScriptCall } from "./calls.js"
import type { Settings } from "./settings.js"

/** How often the depth gauges are read from Redis. */
export const depthRefresh = Duration.seconds(1)

/** The service's `depth`, and the fiber that refreshes the gauges, for the queue with `settings`. */
export const makeDepth = ({ once, run }: Calls, { group, keys, metrics }: Settings) => {
  const readDepth = (call: ScriptCall) =>
    Effect.map(call("depth", [keys.stream, keys.delayed, keys.dead], [group]), (reply) => {
      const [ready, leased, delayed, dead] = reply as [number, number, number, number]
      const depth: JobQueue.Depth = { ready, leased, delayed, dead }
      metrics.recordDepth(depth)
      return depth
    })

  /** The service's `depth`, tried 3 times in all. */
  const depth = readDepth(run)

  /** Reads the depth into the gauges every `depthRefresh`, from now on. */
  const refresher = Effect.gen(function*() {
    while (true) {
      yield* Effect.ignore(readDepth(once))
      yield* Effect.sleep(depthRefresh)
    }
  })

  return { depth, refresher }
}
