/**
 * concurrencyLimit — Tower's ConcurrencyLimit: at most `max` calls in flight, later callers queue in
 * arrival order, and the queue itself is bounded (`maxWaiting`, past it `Overloaded`).
 *
 * The permits are a counter and a FIFO of waiters kept here rather than Effect's `Semaphore.withPermits`,
 * because the guarantee that matters is that no interruption leaks a permit, and it is easiest to keep
 * where every case is visible: a waiter interrupted while queued leaves the queue; a waiter handed a
 * permit at the same moment it is interrupted hands that permit on to the next waiter; an admitted call
 * gives its permit back however it ends (success, failure, defect, interruption). A finishing call passes
 * its permit straight to the oldest waiter, so a newcomer can never overtake the queue.
 *
 * Under `loadShed()` a call that would have to queue fails at once with `Overloaded` instead.
 */
import { Deferred, Effect, Exit, FiberRef, Metric, MetricLabel } from "effect"
import type { Scope } from "effect"
import { Overloaded, shedInsteadOfWaiting, withoutShedding } from "./loadShed.js"
import { middlewareRejections, middlewareWaiting, type Middleware, type Service } from "./Middleware.js"

export interface ConcurrencyLimitOptions {
  /** Callers allowed to queue for a permit; past it a call fails with `Overloaded`. Default 1000. */
  readonly maxWaiting?: number
  /** Names the limit in metrics (`middleware=<name>`). Default `concurrency-limit`. */
  readonly name?: string
}

const limitMetrics = {
  inFlight: Metric.gauge("keel_middleware_in_flight", { description: "calls holding a permit of a limit" }),
  waiting: middlewareWaiting,
  rejections: middlewareRejections
}

/** Why a call was refused, as the `reason` tag of the rejections counter. */
export type ConcurrencyLimitRejection = "shed" | "queue-full"

/** The metrics of the concurrency limit named `name`, to read or export them. */
export const concurrencyLimitMetrics = (name: string) => ({
  inFlight: Metric.tagged(limitMetrics.inFlight, "middleware", name),
  waiting: Metric.tagged(limitMetrics.waiting, "middleware", name),
  rejections: (reason: ConcurrencyLimitRejection) =>
    limitMetrics.rejections.pipe(Metric.tagged("middleware", name), Metric.tagged("reason", reason))
})

const isCount = (value: number, minimum: number) => Number.isInteger(value) && value >= minimum

/**
 * Builds a limit of `max` calls in flight, shared by every service it wraps. The permits live as long as
 * the Scope; the gauges read 0 once it closes.
 */
export const concurrencyLimit = (
  max: number,
  options: ConcurrencyLimitOptions = {}
): Effect.Effect<Middleware<Overloaded>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxWaiting = options.maxWaiting ?? 1000
    if (!isCount(max, 1) || !isCount(maxWaiting, 0)) {
      return yield* Effect.dieMessage(
        `concurrencyLimit: max must be an integer ≥ 1 and maxWaiting an integer ≥ 0 (got ${max}, ${maxWaiting})`
      )
    }
    const name = options.name ?? "concurrency-limit"
    // One tags array per series: the metric registry caches its key by the array's identity.
    const tags = [MetricLabel.make("middleware", name)]
    const rejectionTags: Record<ConcurrencyLimitRejection, ReadonlyArray<MetricLabel.MetricLabel>> = {
      "shed": [...tags, MetricLabel.make("reason", "shed")],
      "queue-full": [...tags, MetricLabel.make("reason", "queue-full")]
    }

    // Invariant: waiters is non-empty only while all `max` permits are held.
    let inFlight = 0
    const waiters = new Set<Deferred.Deferred<void>>()

    const report = () => {
      limitMetrics.inFlight.unsafeUpdate(inFlight, tags)
      limitMetrics.waiting.unsafeUpdate(waiters.size, tags)
    }
    report()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        limitMetrics.inFlight.unsafeUpdate(0, tags)
        limitMetrics.waiting.unsafeUpdate(0, tags)
      })
    )

    const release = () => {
      const oldest = waiters.values().next()
      if (oldest.done) {
        inFlight--
      } else {
        waiters.delete(oldest.value)
        Deferred.unsafeDone(oldest.value, Exit.void)
      }
      report()
    }

    const refuse = (reason: ConcurrencyLimitRejection) => {
      limitMetrics.rejections.unsafeUpdate(1, rejectionTags[reason])
      return Effect.fail(
        new Overloaded({
          reason: reason === "shed" ? "concurrency limit reached" : "concurrency limit: waiting queue full"
        })
      )
    }

    const limited = <A, E, R>(call: Effect.Effect<A, E, R>): Effect.Effect<A, E | Overloaded, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(FiberRef.get(shedInsteadOfWaiting), (shed) =>
          Effect.fiberIdWith((fiberId): Effect.Effect<A, E | Overloaded, R> => {
            const holding = Effect.ensuring(
              restore(shed ? withoutShedding(call) : call),
              Effect.sync(release)
            )
            if (inFlight < max) {
              inFlight++
              report()
              return holding
            }
            if (shed) return refuse("shed")
            if (waiters.size >= maxWaiting) return refuse("queue-full")
            const turn = Deferred.unsafeMake<void>(fiberId)
            waiters.add(turn)
            report()
            const awaitTurn = Effect.onInterrupt(restore(Deferred.await(turn)), () =>
              Effect.sync(() => {
                // Still queued: just leave. Already handed a permit: pass it on.
                if (waiters.delete(turn)) report()
                else release()
              }))
            return Effect.zipRight(awaitTurn, holding)
          })))

    return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Overloaded, R> => (request) =>
      limited(Effect.suspend(() => service(request)))
  })
