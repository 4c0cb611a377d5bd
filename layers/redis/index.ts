/**
 * Distributed backends on Redis (`ioredis`): implementations of Keel's contracts that several processes on
 * several machines share. What survives a Redis restart depends on Redis's own persistence (AOF / RDB).
 */
export * as RedisJobQueue from "./JobQueue/index.js"
export * as RedisJobStore from "./JobStore.js"
