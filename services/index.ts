/**
 * Keel's contracts: the service interfaces applications and examples depend on, each with more than one
 * implementation (embedded in `layers/memory`, distributed ones later), chosen by the Layer provided.
 */
export * as JobStore from "./JobStore.js"
export * as JobQueue from "./JobQueue.js"
