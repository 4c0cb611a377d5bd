/**
 * Keel on @effect/platform HTTP apps: `import { withMiddleware, Body, Prometheus } from "keel/http"`.
 */
export * as Body from "./Body.js"
export { rejectionResponse, rejections, withMiddleware } from "./HttpMiddleware.js"
export * as Prometheus from "./Prometheus.js"
export * as HttpMetrics from "./HttpMetrics.js"
