/**
 * Keel's middleware, one module each, all of one shape: `import { Middleware } from "keel"`, then
 * `Middleware.stack(Middleware.timeout("2 seconds"), …)`.
 */
export * from "./Middleware.js"
export * from "./deadline.js"
export * from "./timeout.js"
export * from "./circuitBreaker.js"
export * from "./retry.js"
export * from "./hedge.js"
export * from "./rateLimit.js"
export * from "./concurrencyLimit.js"
export * from "./loadShed.js"
