/**
 * Keel's public face: `import { Lifecycle, WorkerPool } from "keel"`.
 * Each module is a namespace (`WorkerPool.make`, `Backoff.exponential`) whose file exports only its public
 * API; the errors and their helpers (`withContext`, `render`, `joinTask`) are exported flat, so errors can
 * be matched by class. Machinery lives under `internal/` and is never exported.
 */
export * as Backoff from "./Backoff.js"
export {
  CircuitOpen,
  contextOf,
  DeadlineExceeded,
  Evicted,
  type HttpAnswer,
  HttpAnswerKey,
  Invalid,
  isRejection,
  joinTask,
  Overloaded,
  QueueFull,
  QueueUnavailable,
  RateLimited,
  type Rejection,
  render,
  ShuttingDown,
  StoreFull,
  StoreUnavailable,
  TaskFailed,
  TaskPanicked,
  Timeout,
  TooLarge,
  Unavailable,
  withContext
} from "./Errors.js"
export * as Leftovers from "./Leftovers.js"
export * as Lifecycle from "./Lifecycle.js"
export * as Middleware from "./middleware/index.js"
export * as Propagation from "./Propagation.js"
export * as TaskGroup from "./TaskGroup.js"
export * as Tracker from "./Tracker.js"
export * as WorkerPool from "./WorkerPool.js"
