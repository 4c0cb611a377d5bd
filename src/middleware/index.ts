/**
 * Keel's middleware, one module each, all of one shape: a constructor taking an options object and returning
 * `Effect<Middleware, never, Scope>`, its error defined with Keel's other errors (exported by `keel`), and
 * its metric series beside it. `import { Middleware } from "keel"`, then
 * `Middleware.stack(yield* Middleware.timeout({ after: "2 seconds" }), …)`.
 */
export {
  type Accepts,
  type Adds,
  type AnyMiddleware,
  filter,
  type FilterOptions,
  type Handles,
  type Middleware,
  type Requires,
  type Service,
  stack,
  type Stacked,
  tap,
  type TapOptions
} from "./Middleware.js"
export { deadline, type DeadlineOptions, remaining, within } from "./deadline.js"
export { timeout, type TimeoutOptions } from "./timeout.js"
export {
  type CircuitBreaker,
  circuitBreaker,
  circuitBreakerMetrics,
  type CircuitBreakerMetrics,
  type CircuitBreakerOptions,
  type CircuitBreakerStats,
  type CircuitPolicy,
  type CircuitRejection,
  CircuitState
} from "./circuitBreaker.js"
export {
  defaultRetryBudget,
  retry,
  type RetryBudgetOptions,
  retryMetrics,
  type RetryMetrics,
  type RetryOptions
} from "./retry.js"
export { hedge, type HedgeLatencyPercentile, hedgeMetrics, type HedgeMetrics, type HedgeOptions } from "./hedge.js"
export {
  rateLimit,
  rateLimitMetrics,
  type RateLimitMetrics,
  type RateLimitOptions,
  type RateLimitRejection
} from "./rateLimit.js"
export {
  concurrencyLimit,
  concurrencyLimitMetrics,
  type ConcurrencyLimitMetrics,
  type ConcurrencyLimitOptions,
  type ConcurrencyLimitRejection
} from "./concurrencyLimit.js"
export { loadShed, type LoadShedOptions } from "./loadShed.js"
