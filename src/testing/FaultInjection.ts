/**
 * FaultInjection — makes a user's own service misbehave on purpose, so a property test can show that the
 * code around it (timeouts, retries, breakers, a worker pool's dead letters) copes with what production
 * will do to it: fail with one of its own typed errors, die, answer late, or never answer at all.
 *
 * An injector decides each call with Effect's `Random` and delays it with `Effect.sleep`, so one seed
 * (`Effect.withRandom(Random.make(seed))`, `Layer.setRandom`) replays the same faults and TestClock
 * drives every delay. The draws come in a fixed order, one per configured fault: hang, defect, failure,
 * latency. The first that fires decides the call, so each rate is the chance for a call that got that far,
 * and a failed, dead or hung call never reaches the service. The injector is a middleware, a wrapper for
 * service objects and a Layer transformer; nothing is global, so only the services it wraps pay for it.
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Effectable from "effect/Effectable"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import type * as Random from "effect/Random"
import type { Middleware, Service } from "../middleware/Middleware.js"
import * as Validation from "../internal/Validation.js"

/**
 * The defect an injector kills a call with (through `Effect.die`, so it is in the call's Cause as a defect,
 * not in its error channel). `FaultPlan.replay` dies with it too.
 */
export class InjectedDefect extends Data.TaggedError("InjectedDefect")<{
  /**
   * What the defect says: the `defect.message` of the injector's `Faults` (default `injected defect`), or
   * `planned defect (call n)` for a call `FaultPlan.replay` planned to die.
   */
  readonly message: string
}> {}

/** How long an injected delay lasts; build one with `Latency.fixed`, `Latency.uniform`, `Latency.exponential`. */
export type Latency =
  | {
    /** Every delay is the same. */
    readonly _tag: "Fixed"
    /** The delay; must be finite. */
    readonly duration: Duration.Duration
  }
  | {
    /** Delays spread evenly over a range. */
    readonly _tag: "Uniform"
    /** The shortest delay. */
    readonly min: Duration.Duration
    /** The longest delay; finite, and not below `min`. */
    readonly max: Duration.Duration
  }
  | {
    /** Mostly short delays with a long tail, cut at `max`. */
    readonly _tag: "Exponential"
    /** The mean of the distribution before the cut; must be finite. */
    readonly mean: Duration.Duration
    /** The longest delay: a longer draw lasts `max`. Must be finite. */
    readonly max: Duration.Duration
  }

/**
 * The delay distributions, built from any `DurationInput` (`"50 millis"`, a number of milliseconds, a
 * `Duration`). A distribution that could give an infinite delay is refused by `make` (a defect).
 */
export const Latency = {
  /** Always `duration`. */
  fixed: (duration: Duration.DurationInput): Latency => ({ _tag: "Fixed", duration: Duration.decode(duration) }),
  /** Uniform between `min` and `max`, in whole milliseconds. */
  uniform: (min: Duration.DurationInput, max: Duration.DurationInput): Latency => ({
    _tag: "Uniform",
    min: Duration.decode(min),
    max: Duration.decode(max)
  }),
  /**
   * Exponential with mean `mean` (many short delays, a long tail), in whole milliseconds and cut at `max`: a
   * delay that would be longer lasts `max`, so the tail stays bounded.
   */
  exponential: (mean: Duration.DurationInput, options: { readonly max: Duration.DurationInput }): Latency => ({
    _tag: "Exponential",
    mean: Duration.decode(mean),
    max: Duration.decode(options.max)
  })
}

/**
 * Which faults to inject and how often. Every rate is a probability in [0, 1], checked in the order below,
 * each among the calls the faults before it let through.
 */
export interface Faults<E = never> {
  /** The call never completes; it can be interrupted, so a timeout (or any interruption) ends it. */
  readonly hang?: {
    /** Chance in [0, 1] that a call hangs. */
    readonly rate: number
  }
  /** The call dies with `InjectedDefect { message }`; `message` defaults to `injected defect`. */
  readonly defect?: {
    /** Chance in [0, 1] that a call that did not hang dies. */
    readonly rate: number
    /** The `InjectedDefect`'s message. Default `injected defect`. */
    readonly message?: string
  }
  /** The call fails with a fresh error from a factory picked uniformly; use the service's own errors. */
  readonly failure?: {
    /** Chance in [0, 1] that a call that neither hung nor died fails. */
    readonly rate: number
    /** Factories of the errors to fail with, at least one; each failure calls one, so errors are fresh. */
    readonly errors: ReadonlyArray<() => E>
  }
  /** The call runs after a delay drawn from `distribution`. */
  readonly latency?: {
    /** Chance in [0, 1] that a call not faulted otherwise is delayed before it reaches the service. */
    readonly rate: number
    /** How long a delay lasts, drawn afresh for each delayed call. */
    readonly distribution: Latency
  }
}

/**
 * What an injector has done so far, over every service it wraps. `calls` counts every call it saw, faulted
 * or not: each time a call's Effect runs, before any fault is drawn.
 */
export interface FaultStats {
  /** Calls seen, faulted or not. */
  readonly calls: number
  /** Calls made to hang. */
  readonly hangs: number
  /** Calls made to die with `InjectedDefect`. */
  readonly defects: number
  /** Calls made to fail with one of the `failure.errors`. */
  readonly failures: number
  /** Calls delayed before reaching the service (they then ran as usual). */
  readonly delayed: number
}

/**
 * Injects one spec's faults into the services it wraps; `E` is the errors of its `failure` factories. It is
 * a middleware (it injects faults into every call of a service, and goes in a `stack` like any other) that
 * also wraps service objects and layers.
 */
export interface Injector<E> extends Middleware<E> {
  /**
   * The same service with faults in every Effect it hands out: the Effects its methods return and its
   * members that are Effects. Methods run with the original object as `this`; other members, and yieldable
   * data types such as Option, Ref, Queue or a Context tag, are left as they are. Faults are drawn each time
   * an Effect runs, not when it is built.
   */
  readonly wrap: <S extends object>(service: S) => S
  /**
   * Replaces the service `tag` that a layer builds with its wrapped version (see `wrap`); whatever else the
   * layer provides passes through unchanged.
   */
  readonly layer: <I, S extends object>(
    tag: Context.Tag<I, S>
  ) => <ROut, E2, R2>(layer: Layer.Layer<ROut | I, E2, R2>) => Layer.Layer<ROut | I, E2, R2>
  /** The counters so far. */
  readonly stats: Effect.Effect<FaultStats>
}

/** The faults' options, checked: dies with `IllegalArgumentException` naming each invalid one. */
const validate = <E>(faults: Faults<E>): Effect.Effect<void> => {
  const rates = (["hang", "defect", "failure", "latency"] as const).map((part): Validation.Check => {
    const rate = faults[part]?.rate
    return [`${part}.rate`, rate, rate === undefined || Validation.isRate(rate), "in [0, 1]"]
  })
  const distribution = faults.latency?.distribution
  const distributionCheck = (): Validation.Check => {
    switch (distribution?._tag) {
      case undefined:
        return ["latency.distribution", undefined, true, ""]
      case "Fixed":
        return ["latency.distribution", distribution.duration, Duration.isFinite(distribution.duration), "a finite fixed delay"]
      case "Uniform":
        return [
          "latency.distribution",
          `${Duration.format(distribution.min)}..${Duration.format(distribution.max)}`,
          Duration.isFinite(distribution.max) && !Duration.greaterThan(distribution.min, distribution.max),
          "a uniform delay with min ≤ max, both finite"
        ]
      case "Exponential":
        return [
          "latency.distribution",
          `mean ${Duration.format(distribution.mean)}, max ${Duration.format(distribution.max)}`,
          Duration.isFinite(distribution.mean) && Duration.isFinite(distribution.max),
          "an exponential delay with a finite mean and max"
        ]
    }
  }
  return Validation.validate("FaultInjection.make", [
    ...rates,
    [
      "failure.errors",
      faults.failure?.errors.length,
      faults.failure === undefined || faults.failure.errors.length > 0,
      "a list of at least one error factory"
    ],
    distributionCheck()
  ])
}

// A drawn delay is rounded to whole milliseconds, the resolution of timers: virtual instants stay integers
// (no float noise when a test subtracts them), and TestClock has fewer distinct instants to step through.
const drawnDelay = (millis: number, min: number, max: number) =>
  Duration.millis(Math.min(max, Math.max(min, Math.round(millis))))

const sample = (random: Random.Random, latency: Latency): Effect.Effect<Duration.Duration> => {
  switch (latency._tag) {
    case "Fixed":
      return Effect.succeed(latency.duration)
    case "Uniform": {
      const minMillis = Duration.toMillis(latency.min)
      const maxMillis = Duration.toMillis(latency.max)
      return Effect.map(random.nextRange(minMillis, maxMillis), (millis) => drawnDelay(millis, minMillis, maxMillis))
    }
    case "Exponential": {
      const meanMillis = Duration.toMillis(latency.mean)
      const maxMillis = Duration.toMillis(latency.max)
      // Inverse transform of a draw in [0, 1): 1 − draw is in (0, 1], so the logarithm is finite.
      return Effect.map(random.next, (draw) => drawnDelay(-meanMillis * Math.log(1 - draw), 0, maxMillis))
    }
  }
}

// Option, Either, Ref, Queue, Deferred, Fiber, Config, Context tags and tagged errors can all be yielded as
// Effects, but a service holding one means the value itself. Effect builds every such type on Effectable's
// prototypes, which also mark it as a Stream; an Effect built by Effect's constructors has no such mark.
const isPlainEffect = (value: unknown): value is Effect.Effect<unknown, unknown, unknown> =>
  Effect.isEffect(value) && !Predicate.hasProperty(value, Effectable.StreamTypeId)

/**
 * Builds an injector for `faults`. A rate outside [0, 1], an empty `failure.errors` or a delay that could
 * be infinite is a defect. The error type is the union of what the factories return (TypeScript would
 * otherwise settle on the first factory's); to name it, declare the spec as `Faults<MyError>`. Each call
 * to `make` has its own counters; faults are drawn from the `Random` service of the fiber making the call.
 *
 * @typeParam Factory - The type of the `failure.errors` factories, inferred from them; the injector fails
 * with what they return, and with nothing (`never`) when there is no `failure`.
 *
 * @example
 * ```ts
 * import { Data, Effect, Random } from "effect"
 * import { FaultInjection } from "keel/testing"
 *
 * class Unavailable extends Data.TaggedError("Unavailable")<{}> {}
 *
 * const program = Effect.gen(function*() {
 *   const injector = yield* FaultInjection.make({
 *     failure: { rate: 0.2, errors: [() => new Unavailable()] },
 *     latency: { rate: 0.5, distribution: FaultInjection.Latency.uniform("10 millis", "200 millis") }
 *   })
 *   const lookup = injector((id: string) => Effect.succeed({ id, name: "Ada" }))
 *   return yield* lookup("42") // fails with Unavailable one time in five
 * }).pipe(Effect.withRandom(Random.make(42))) // one seed, the same faults every run
 * ```
 */
export const make = <Factory extends () => unknown = () => never>(
  faults: Faults<ReturnType<Factory>> & { readonly failure?: { readonly errors: ReadonlyArray<Factory> } }
): Effect.Effect<Injector<ReturnType<Factory>>> => build<ReturnType<Factory>>(faults)

const build = <E>(faults: Faults<E>): Effect.Effect<Injector<E>> =>
  Effect.suspend(() => {
    const { defect, failure, hang, latency } = faults
    const defectMessage = defect?.message ?? "injected defect"
    const counts = { calls: 0, hangs: 0, defects: 0, failures: 0, delayed: 0 }

    const inject = <A, E1, R>(call: Effect.Effect<A, E1, R>): Effect.Effect<A, E | E1, R> =>
      Effect.randomWith((random) =>
        Effect.gen(function*() {
          counts.calls++
          if (hang !== undefined && (yield* random.next) < hang.rate) {
            counts.hangs++
            return yield* Effect.never
          }
          if (defect !== undefined && (yield* random.next) < defect.rate) {
            counts.defects++
            return yield* Effect.die(new InjectedDefect({ message: defectMessage }))
          }
          if (failure !== undefined && (yield* random.next) < failure.rate) {
            counts.failures++
            const pick = yield* random.nextIntBetween(0, failure.errors.length)
            return yield* Effect.fail(failure.errors[pick]!())
          }
          if (latency !== undefined && (yield* random.next) < latency.rate) {
            counts.delayed++
            yield* Effect.sleep(yield* sample(random, latency.distribution))
          }
          return yield* call
        })
      )

    const middleware: Middleware<E> = <Req, Res, E1, R>(service: Service<Req, Res, E1, R>) => (request: Req) =>
      inject(service(request))

    const wrap = <S extends object>(service: S): S => {
      // One wrapper per original member, so a member read twice is the same value both times.
      const wrapped = new WeakMap<object, unknown>()
      const wrapMember = (member: unknown): unknown => {
        const isMethod = typeof member === "function" && !Effect.isEffect(member)
        if (!isMethod && !isPlainEffect(member)) return member
        const known = wrapped.get(member)
        if (known !== undefined) return known
        const replacement = isMethod
          ? (...args: Array<unknown>) => {
            const result = (member as (...args: Array<unknown>) => unknown).apply(service, args)
            return isPlainEffect(result) ? inject(result) : result
          }
          : inject(member as Effect.Effect<unknown, unknown, unknown>)
        wrapped.set(member, replacement)
        return replacement
      }
      // The proxy's own target is an empty object inheriting from the service: a Proxy must report a
      // frozen target's properties unchanged, and this target has none, so frozen services work too.
      return new Proxy(Object.create(service) as S, {
        get: (_, key) => wrapMember(Reflect.get(service, key)),
        set: (_, key, value) => Reflect.set(service, key, value),
        getPrototypeOf: () => Reflect.getPrototypeOf(service),
        ownKeys: () => Reflect.ownKeys(service),
        getOwnPropertyDescriptor: (_, key) => {
          const descriptor = Reflect.getOwnPropertyDescriptor(service, key)
          if (descriptor === undefined) return undefined
          return "value" in descriptor
            ? { ...descriptor, value: wrapMember(descriptor.value), configurable: true }
            : { ...descriptor, configurable: true }
        }
      })
    }

    const layer = <I, S extends object>(tag: Context.Tag<I, S>) =>
    <ROut, E2, R2>(built: Layer.Layer<ROut | I, E2, R2>): Layer.Layer<ROut | I, E2, R2> =>
      Layer.map(built, (context) => Context.add(context, tag, wrap(Context.get(context, tag))))

    const injector: Injector<E> = Object.assign(middleware, {
      wrap,
      layer,
      stats: Effect.sync(() => ({ ...counts }))
    })
    return Effect.as(validate(faults), injector)
  })
