/**
 * Keel on @effect/platform HTTP apps: `import { withMiddleware } from "keel/http"`.
 */
export { rejectionResponse, rejections, withMiddleware, type Rejection } from "./HttpMiddleware.js"
