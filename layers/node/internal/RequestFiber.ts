/**
 * RequestFiber — how a request's fiber starts: synchronously, from a runtime made without copying the server's.
 *
 * Each request runs as one fiber, forked on Node's request event (`startAtOnce`) and run within the request
 * handler until it first suspends: an app that answers without suspending is answered within the same tick.
 * The fiber's runtime is made per request, from parts made once per served app by `runtimes`: the server's
 * services with the request read through to them (see RequestContext), the server's runtime flags without
 * Effect's fiber metrics, and the server's fiber refs less those a new fiber would not need copied.
 */
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Context from "effect/Context"
import * as Equal from "effect/Equal"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import { ServicesWithRequest } from "./RequestContext.js"

/** A request's fiber runs within the request handler until it first suspends. */
export const startAtOnce: Runtime.RunForkOptions = { immediate: true }

/**
 * Reads from the server's runtime, once per served app, what every request's runtime shares; the function
 * returned makes the runtime of one request.
 */
export const runtimes = (
  server: Runtime.Runtime<never>
): (request: HttpServerRequest.HttpServerRequest) => Runtime.Runtime<HttpServerRequest.HttpServerRequest> => {
  // Request fibers are not counted in Effect's fiber metrics (effect_fiber_*): one per request would
  // cost five metric updates each and drown the rest; HttpMetrics counts requests.
  const requestFlags = RuntimeFlags.disable(server.runtimeFlags, RuntimeFlags.RuntimeMetrics)
  // The request fiber starts from the server's fiber refs less those it would only replace (its context,
  // set when it starts, and the snapshot of its runtime flags a fiber writes whenever its refs are read)
  // and less those still at their initial value, which an absent fiber ref reads as anyway. With none
  // left (no logger or log level of the server's own), starting the fiber copies no fiber refs at all.
  const initially = FiberRefs.empty()
  const requestFiberRefs = FiberRefs.unsafeMake(new Map(
    [...server.fiberRefs.locals].filter(([fiberRef, stack]) =>
      fiberRef !== FiberRef.currentContext && fiberRef !== FiberRef.currentRuntimeFlags &&
      !Equal.equals(stack[0][1], FiberRefs.getOrDefault(initially, fiberRef))
    )
  ))
  // The server's services plus the request, read through to the server's own map rather than copied.
  const services = server.context.unsafeMap
  return (request) =>
    Runtime.make({
      context: Context.unsafeMake<HttpServerRequest.HttpServerRequest>(new ServicesWithRequest(services, request)),
      runtimeFlags: requestFlags,
      fiberRefs: requestFiberRefs
    })
}
