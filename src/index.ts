/**
 * Keel's public face: `import { Lifecycle, WorkerPool } from "keel"`.
 * Each module is a namespace (`WorkerPool.make`, `Lifecycle.shutdown`); errors are exported flat so
 * they can be matched by class.
 */
export * as Backoff from "./Backoff.js"
export * from "./Errors.js"
export * as Lifecycle from "./Lifecycle.js"
export * as Tracker from "./Tracker.js"
export * as WorkerPool from "./WorkerPool.js"
