/**
 * Embedded defaults: implementations of Keel's contracts that live in the process's memory and need no
 * server, so an application runs (and its tests run) with nothing else installed. Nothing they hold
 * survives the process — a restart starts empty — and each is bounded, with a typed error past its limit.
 * Swap in a distributed backend's Layer when the data must outlive the process.
 */
export * as MemoryJobQueue from "./JobQueue.js"
export * as MemoryJobStore from "./JobStore.js"
