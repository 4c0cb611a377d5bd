/**
 * The instruments every limit shares: one counter of refused calls and one gauge of waiting calls, whose
 * series each middleware tells apart by `middleware=<name>` (and the counter by `reason`). Users read a
 * middleware's series through its own `…Metrics(name)` function.
 */
import * as Metric from "effect/Metric"

/** `keel_middleware_rejections_total`: calls a middleware refused, by `middleware` and `reason`. */
export const rejections = Metric.counter("keel_middleware_rejections_total", {
  description: "calls a middleware refused",
  incremental: true
})

/** `keel_middleware_waiting`: calls waiting at a limit now (for a permit, for a slot), by `middleware`. */
export const waiting = Metric.gauge("keel_middleware_waiting", { description: "calls queued at a limit" })
