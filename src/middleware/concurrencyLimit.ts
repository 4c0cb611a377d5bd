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
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import type * as Cause from "effect/Cause"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { Overloaded } from "../Errors.js"
import * as MetricSeries from "../internal/MetricSeries.js"
import * as Instruments from "../internal/middlewareInstruments.js"
import { event } from "../internal/tracing.js"
import * as Validation from "../internal/Validation.js"
import { takeShedding, withShedding } from "../internal/shedding.js"
import type { Middleware, Service } from "./Middleware.js"

/** What `concurrencyLimit` takes: how many calls may run at once, how many may queue, and its name. */
export interface ConcurrencyLimitOptions {
  /** Calls in flight at most: an integer ≥ 1. */
  readonly max: number
  /**
   * Callers allowed to queue for a permit: an integer ≥ 0 (0 never queues). Past it a call fails with
   * `Overloaded`. Default 1000.
   */
  readonly maxWaiting?: number
  /** Names the limit in metrics (`middleware=<name>`). Default `concurrency-limit`. */
  readonly name?: string
}

/** `keel_middleware_in_flight`: calls holding a permit of a limit, by `middleware`. */
const inFlightGauge = Metric.gauge("keel_middleware_in_flight", { description: "calls holding a permit of a limit" })

/** Why a call was refused, as the `reason` tag of the rejections counter. */
export type ConcurrencyLimitRejection = "shed" | "queue-full"

/** The metric series of one concurrency limit, as `concurrencyLimitMetrics` returns them. */
export interface ConcurrencyLimitMetrics {
  /** Calls holding a permit. */
  readonly inFlight: Metric.Metric.Gauge<number>
  /** Calls queued for a permit. */
  readonly waiting: Metric.Metric.Gauge<number>
  /** Calls refused, by reason. */
  readonly rejections: (reason: ConcurrencyLimitRejection) => Metric.Metric.Counter<number>
}

/** The metrics of the concurrency limit named `name`, to read or export them. */
export const concurrencyLimitMetrics = (name: string): ConcurrencyLimitMetrics => {
  const series = MetricSeries.series("middleware", name)
  return {
    inFlight: series.of(inFlightGauge),
    waiting: series.of(Instruments.waiting),
    rejections: (reason) => series.of(Instruments.rejections, { reason })
  }
}

/**
 * Builds a limit of `max` calls in flight, shared by every service it wraps. The permits live as long as
 * the Scope; the gauges read 0 once it closes. Later callers queue in arrival order; a call fails with
 * `Overloaded` when `maxWaiting` callers already queue, or, under `loadShed()`, whenever it would have to
 * queue. Dies with `IllegalArgumentException` naming an invalid option.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Middleware } from "keel"
 *
 * const render = (page: string) => Effect.as(Effect.sleep("100 millis"), `<h1>${page}</h1>`)
 *
 * const program = Effect.gen(function*() {
 *   const limit = yield* Middleware.concurrencyLimit({ max: 4, maxWaiting: 100, name: "render" })
 *   const limited = limit(render)
 *   // At most 4 renders run at once; the others wait their turn.
 *   return yield* Effect.forEach(["a", "b", "c", "d", "e", "f"], limited, { concurrency: "unbounded" })
 * }).pipe(Effect.scoped)
 * ```
 */
export const concurrencyLimit = (
  options: ConcurrencyLimitOptions
): Effect.Effect<Middleware<Overloaded>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { max } = options
    const maxWaiting = options.maxWaiting ?? 1000
    yield* Validation.validate("Middleware.concurrencyLimit", [
      ["max", max, Validation.isIntegerFrom(max, 1), Validation.integerFrom(1)],
      ["maxWaiting", maxWaiting, Validation.isIntegerFrom(maxWaiting, 0), Validation.integerFrom(0)]
    ])
    const series = MetricSeries.series("middleware", options.name ?? "concurrency-limit")
    const tags = series.labels
    const rejectionTags: Record<ConcurrencyLimitRejection, ReadonlyArray<MetricLabel.MetricLabel>> = {
      "shed": series.labelsWith({ reason: "shed" }),
      "queue-full": series.labelsWith({ reason: "queue-full" })
    }

    // Invariant: waiters is non-empty only while all `max` permits are held.
    let inFlight = 0
    const waiters = new Set<Deferred.Deferred<void>>()

    const reportInFlight = () => inFlightGauge.unsafeUpdate(inFlight, tags)
    const reportWaiting = () => Instruments.waiting.unsafeUpdate(waiters.size, tags)
    reportInFlight()
    reportWaiting()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        inFlightGauge.unsafeUpdate(0, tags)
        Instruments.waiting.unsafeUpdate(0, tags)
      })
    )

    const release = () => {
      const oldest = waiters.values().next()
      if (oldest.done) {
        inFlight--
        reportInFlight()
      } else {
        waiters.delete(oldest.value)
        reportWaiting()
        Deferred.unsafeDone(oldest.value, Exit.void)
      }
    }
    // The admitted call's way out, however it ends; the handlers are made once, so a call allocates none.
    const releaseOnExit = {
      onSuccess: (value: unknown) => {
        release()
        return Effect.succeed(value)
      },
      onFailure: (cause: Cause.Cause<unknown>) => {
        release()
        return Effect.failCause(cause)
      }
    }
    const holdingPermit = <A, E, R>(call: Effect.Effect<A, E, R>) =>
      Effect.matchCauseEffect(call, releaseOnExit) as Effect.Effect<A, E, R>

    const refuse = (fiber: Fiber.RuntimeFiber<unknown, unknown>, reason: ConcurrencyLimitRejection) => {
      Instruments.rejections.unsafeUpdate(1, rejectionTags[reason])
      event(fiber, reason === "shed" ? "keel.load_shed" : "keel.concurrency_limit.rejected", {
        "keel.limit": options.name ?? "concurrency-limit",
        "keel.rejection.reason": reason
      })
      return Effect.fail(
        new Overloaded({
          reason: reason === "shed" ? "concurrency limit reached" : "concurrency limit: waiting queue full"
        })
      )
    }

    // The way in for a call that holds a permit, in a region no interruption can split from the permit's
    // count. `call` makes the call's Effect (`limited` may have made it already): at once when a permit is free,
    // after the wait otherwise. A service that throws while making it holds no permit: on the spot the throw
    // comes before the permit is counted, after a wait it is a defect of the call, which releases the permit
    // it was handed. `shed`: refuse where it would wait.
    const admit = <A, E, R>(
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      shed: boolean,
      call: () => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | Overloaded, R> =>
      Effect.uninterruptibleMask((restore): Effect.Effect<A, E | Overloaded, R> => {
        if (inFlight < max) {
          const holding = holdingPermit(restore(call()))
          inFlight++
          reportInFlight()
          return holding
        }
        if (shed) return refuse(fiber, "shed")
        if (waiters.size >= maxWaiting) return refuse(fiber, "queue-full")
        const turn = Deferred.unsafeMake<void>(fiber.id())
        waiters.add(turn)
        reportWaiting()
        const awaitTurn = Effect.onInterrupt(restore(Deferred.await(turn)), () =>
          Effect.sync(() => {
            // Still queued: just leave. Already handed a permit: pass it on.
            if (waiters.delete(turn)) reportWaiting()
            else release()
          }))
        return Effect.zipRight(awaitTurn, holdingPermit(restore(Effect.suspend(call))))
      })

    // `shedding`: the twin loadShed() uses, refusing where it would wait; a pending shedding request in fiber
    // context asks the same of either, and is taken whether the call waits or not. A call that is already its
    // result (a constant answer) would take a free permit and give it back in the same instant: with one free
    // it is answered as it is, with nothing to hold and nothing to release.
    const limited = <Req, A, E, R>(
      shedding: boolean,
      service: Service<Req, A, E, R>,
      request: Req
    ): Effect.Effect<A, E | Overloaded, R> =>
      Effect.withFiberRuntime((fiber) => {
        const shed = takeShedding(fiber) || shedding
        if (inFlight >= max) return admit(fiber, shed, () => service(request))
        const call = service(request)
        return Exit.isExit(call) ? call : admit(fiber, shed, () => call)
      })

    return <Req, Res, E, R>(service: Service<Req, Res, E, R>): Service<Req, Res, E | Overloaded, R> =>
      withShedding<Service<Req, Res, E | Overloaded, R>>(
        (request) => limited(false, service, request),
        (request) => limited(true, service, request)
      )
  })
