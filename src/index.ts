/**
 * Keel's public face: `import { Lifecycle, WorkerPool } from "keel"`.
 * Each module is a namespace (`WorkerPool.make`, `Backoff.exponential`); the errors and their helpers
 * (`withContext`, `render`, `joinTask`) are exported flat, so errors can be matched by class.
 */
export * as Backoff from "./Backoff.js"
export * from "./Errors.js"
export * as Leftovers from "./Leftovers.js"
export * as Lifecycle from "./Lifecycle.js"
export * as Middleware from "./middleware/index.js"
export * as TaskGroup from "./TaskGroup.js"
export * as Tracker from "./Tracker.js"
export * as WorkerPool from "./WorkerPool.js"
