/**
 * Keel's contracts: the service interfaces applications and examples depend on, each with more than one
 * implementation (embedded in keel/memory, distributed on Redis in keel/redis), chosen by the Layer provided.
 */
export * as JobStore from "./JobStore.js"
export * as JobQueue from "./JobQueue.js"
