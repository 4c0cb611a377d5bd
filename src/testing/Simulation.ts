/**
 * Simulation — a whole Effect program run deterministically from a seed: its fibers' steps one at a time in an
 * order the seed chooses, on simulated time, with seeded randomness, every choice logged; so a run that fails
 * is replayed exactly from its token.
 *
 * The bugs that hurt in production live in interleavings Effect's default scheduler never tries: it runs ready
 * fibers in the order they became ready. Here the program runs under a scheduler that holds every ready task
 * and runs exactly one at a time, chosen uniformly by a PCG generator seeded from the run's seed (each choice
 * is a step of the trace). Its Clock is simulated: a sleep is a timer of the simulation, and when nothing is
 * runnable time jumps to the earliest timer, so an hour of sleeps takes no wall time and every timer fires in
 * a seeded order among the ready tasks. Its `Random` is seeded too. The world is closed: when nothing is
 * runnable and no timer is pending yet the program has not ended, it is waiting on something outside the
 * simulation (a real timer, an unwrapped promise, a socket) or deadlocked, and the run ends `stalled`, saying
 * so. The trace hash (FNV-1a over every choice and time jump, and how the program ended) is what a replay and
 * the determinism self-check compare.
 *
 * A program can host several instances of an application (`instance`), sharing what it made before starting
 * them; a crash (`crash`, or seeded with `crashProbability`) stops an instance at a step: the scheduler drops
 * its tasks, so its fibers never run again and its finalizers never run, unlike an interruption. Preemption
 * happens where Effect yields on its own (every 2048 operations) and at every suspension, not at extra points.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Random from "effect/Random"
import type * as Scheduler from "effect/Scheduler"
import { PCGRandom } from "effect/Utils"

/** How a simulation runs. */
export interface Options {
  /** Decides every choice of the run (which ready task runs next) and seeds the program's `Random`. */
  readonly seed: number
  /** Steps (tasks run) after which the run stops as `exhausted`, so a livelock cannot run forever. Default 100,000. */
  readonly maxSteps?: number
  /** The simulated Clock's start, in millis. Default 0. */
  readonly startAt?: number
  /**
   * The choices to make, instead of drawing them from the seed: at the n-th step with more than one task
   * ready, the task at `decisions[n] % ready` runs; past the list, the oldest ready task (as Effect's own
   * scheduler would). A list of numbers is what `search` has fast-check generate and shrink, so a failing
   * schedule shrinks to the few choices that matter.
   */
  readonly decisions?: ReadonlyArray<number>
  /**
   * How a choice is drawn from the seed: `random` (default), uniformly among the ready tasks; or PCT
   * (probabilistic concurrency testing, Burckhardt et al.): each fiber gets a random priority, the ready task of
   * the highest-priority fiber runs, and at `depth − 1` steps drawn from the first `steps` the running fiber's
   * priority drops below all others. A bug that needs `depth` ordering constraints is found with probability
   * at least 1 / (fibers · steps^(depth−1)) per run, where uniform choices can need far more runs. Ignored when
   * `decisions` is given.
   */
  readonly strategy?: "random" | PctStrategy
  /**
   * Before each step, each instance still alive (see `instance`) crashes with this probability, drawn from
   * the seed: its fibers never run again and its finalizers never run. Default 0 (instances crash only when
   * the program calls `crash`).
   */
  readonly crashProbability?: number
}

/** PCT scheduling (see `Options.strategy`). */
export interface PctStrategy {
  /** The PCT parameters. */
  readonly pct: {
    /** The bug depth aimed at: `depth − 1` priority change points. At least 1. */
    readonly depth: number
    /** The steps the change points are drawn from, about the length of a run. Default 1,000. */
    readonly steps?: number
  }
}

/** One entry of a run's trace: a task chosen among the ready ones, or the Clock jumping to the next timer. */
export type Step =
  | {
    /** A ready task ran. */
    readonly _tag: "Ran"
    /** Its index among the ready tasks, in the order they became ready. */
    readonly choice: number
    /** How many tasks were ready. */
    readonly of: number
  }
  | {
    /** Nothing was ready: the Clock jumped to the earliest timer, which fired. */
    readonly _tag: "Advanced"
    /** The new time, in millis. */
    readonly to: number
  }
  | {
    /** An instance crashed: its fibers never run again. */
    readonly _tag: "Crashed"
    /** The instance's name. */
    readonly instance: string
  }

/** How a simulated run ended, with what replays and checks it. */
export interface Result<A, E> {
  /** `completed`: the program ended (see `exit`); `stalled`: it waits on something outside the simulation or is deadlocked; `exhausted`: `maxSteps` ran out. */
  readonly status: "completed" | "stalled" | "exhausted"
  /** The program's Exit when it completed. */
  readonly exit: Exit.Exit<A, E> | undefined
  /** Every choice and time jump, in order. */
  readonly trace: ReadonlyArray<Step>
  /** FNV-1a of the trace and the ending, in hex: equal for runs that took the same path. */
  readonly hash: string
  /** What `replay` needs to run this exact path again. */
  readonly token: string
  /** The simulated time at the end, in millis. */
  readonly endedAt: number
}

/** A program failed a run, or two runs of one seed took different paths. */
export class SimulationFailed extends Error {
  /** `SimulationFailed`. */
  override readonly name = "SimulationFailed"
}

interface Timer {
  readonly at: number
  readonly order: number
  readonly fire: () => void
  cancelled: boolean
}

const fnvOffset = 0x811c9dc5
const fnvPrime = 0x01000193

/** FNV-1a, 32 bits, over the numbers of a trace (integers: choices, counts, tags, whole milliseconds). */
class TraceHash {
  private state = fnvOffset
  add(value: number): void {
    // The four bytes of the number's low 32 bits, then of the next 21, so times past 2^32 ms count too.
    const low = value >>> 0
    const high = Math.floor(value / 0x1_0000_0000) >>> 0
    let state = this.state
    for (const word of [low, high]) {
      state = Math.imul(state ^ (word & 0xff), fnvPrime)
      state = Math.imul(state ^ ((word >>> 8) & 0xff), fnvPrime)
      state = Math.imul(state ^ ((word >>> 16) & 0xff), fnvPrime)
      state = Math.imul(state ^ (word >>> 24), fnvPrime)
    }
    this.state = state >>> 0
  }
  get hex(): string {
    return this.state.toString(16).padStart(8, "0")
  }
}

/** The instance a fiber belongs to (inherited by the fibers it forks); none for the program itself. */
const currentInstance = FiberRef.unsafeMake<string | undefined>(undefined)

/** What the running simulation lets a program do to it: crash an instance. */
interface Control {
  readonly crash: (instance: string) => void
}

const currentControl = FiberRef.unsafeMake<Control | undefined>(undefined)

/** An instance of an application inside a simulation: its fibers, crashable as one. */
export interface Instance<A, E> {
  /** The instance's name, as traces and `crash` name it. */
  readonly name: string
  /** Its main fiber. After a crash it never ends: do not join a crashed instance. */
  readonly fiber: Fiber.RuntimeFiber<A, E>
}

/**
 * Starts `effect` as an instance named `name`: a daemon fiber whose fibers (it and every fiber it forks) can
 * be crashed together, by `crash` or by `Options.crashProbability`. Instances share what the program made
 * before starting them (a queue, a store), as processes share a network service.
 */
export const instance = <A, E, R>(name: string, effect: Effect.Effect<A, E, R>): Effect.Effect<Instance<A, E>, never, R> =>
  Effect.map(Effect.forkDaemon(Effect.locally(effect, currentInstance, name)), (fiber) => ({ name, fiber }))

/** `effect`, its steps (and the fibers it forks) belonging to no instance: a crash does not stop them. */
const outsideInstances = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, currentInstance, undefined)

/**
 * `service` as the instances reach a service over the network: each of its calls (every method returning an
 * Effect, and every Effect property) runs outside the calling instance, and so does the work the service
 * forks for it (a lease's expiry timer, a delayed job). An instance that crashes mid-call stops when the
 * call returns to it: the service has applied the call, the reply is lost. Without it, a service made by the
 * program but called by an instance would fork its timers into that instance, and they would die with it.
 */
export const shared = <S extends object>(service: S): S =>
  Object.fromEntries(Object.entries(service).map(([key, value]) => {
    if (Effect.isEffect(value)) return [key, outsideInstances(value)]
    if (typeof value !== "function") return [key, value]
    return [key, (...args: Array<unknown>) => {
      const result: unknown = (value as (...args: Array<unknown>) => unknown).apply(service, args)
      return Effect.isEffect(result) ? outsideInstances(result) : result
    }]
  })) as S

/**
 * Crashes `target` now, as a process dies: none of its fibers runs again and none of its finalizers runs (a
 * graceful stop is an interruption or a Lifecycle shutdown instead). Outside a simulation it does nothing.
 */
export const crash = (target: Instance<unknown, unknown> | string): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    fiber.getFiberRef(currentControl)?.crash(typeof target === "string" ? target : target.name)
    return Effect.void
  })

/**
 * Runs `program` as a simulation from `options.seed`, synchronously, and reports how it ended with its trace,
 * hash and replay token. The program needs nothing from outside: what it waits for must happen inside it.
 *
 * @example
 * ```ts
 * import { Effect, Ref } from "effect"
 * import { Simulation } from "keel/testing"
 *
 * // Two fibers increment a counter with a read, a yield and a write: some orders lose an update.
 * const racy = Effect.gen(function*() {
 *   const counter = yield* Ref.make(0)
 *   const increment = Effect.flatMap(Ref.get(counter), (seen) => Effect.zipRight(Effect.yieldNow(), Ref.set(counter, seen + 1)))
 *   yield* Effect.all([increment, increment], { concurrency: "unbounded" })
 *   return yield* Ref.get(counter)
 * })
 *
 * const lost = [1, 2, 3, 4, 5, 6, 7, 8].map((seed) => Simulation.run(racy, { seed }))
 *   .find((result) => result.exit !== undefined && result.exit._tag === "Success" && result.exit.value === 1)
 * // lost?.token replays that run: Simulation.replay(racy, lost.token).hash === lost.hash
 * ```
 */
export const run = <A, E>(program: Effect.Effect<A, E>, options: Options): Result<A, E> => {
  const maxSteps = options.maxSteps ?? 100_000
  const chooser = new PCGRandom(options.seed >>> 0)
  const hash = new TraceHash()
  const trace: Array<Step> = []
  const ready: Array<{ readonly task: Scheduler.Task; readonly instance: string | undefined; readonly fiber: number }> = []
  const timers: Array<Timer> = []
  let now = options.startAt ?? 0
  let timerOrder = 0
  const instances = new Set<string>()
  const crashed = new Set<string>()
  // The instances not crashed, in name order (the order crash draws are made in), kept rather than sorted each step.
  let alive: ReadonlyArray<string> = []
  let aliveOf = -1
  const aliveInstances = () => {
    if (aliveOf !== instances.size + crashed.size) {
      alive = [...instances].filter((instance) => !crashed.has(instance)).sort()
      aliveOf = instances.size + crashed.size
    }
    return alive
  }
  const crashProbability = options.crashProbability ?? 0
  const decisions = options.decisions
  let decisionsUsed = 0
  const pct = decisions === undefined && typeof options.strategy === "object" ? options.strategy.pct : undefined
  // PCT's state: a priority per fiber (drawn when it is first seen), and the steps at which the running
  // fiber's priority drops to the change point's (below every initial priority).
  const priorities = new Map<number, number>()
  const changePoints = new Map<number, number>()
  if (pct !== undefined) {
    const within = Math.max(1, pct.steps ?? 1_000)
    for (let change = 1; change < pct.depth; change++) changePoints.set(1 + chooser.integer(within), change - pct.depth)
  }
  const priorityOf = (fiber: number) => {
    let priority = priorities.get(fiber)
    if (priority === undefined) {
      priority = chooser.number()
      priorities.set(fiber, priority)
    }
    return priority
  }
  /** The index of the ready task PCT runs: the highest-priority fiber's oldest; then the step's change point. */
  const pctChoice = () => {
    let best = 0
    for (let index = 1; index < ready.length; index++) {
      if (priorityOf(ready[index]!.fiber) > priorityOf(ready[best]!.fiber)) best = index
    }
    const lowered = changePoints.get(steps + 1)
    if (lowered !== undefined) priorities.set(ready[best]!.fiber, lowered)
    return best
  }

  const crashNow = (instance: string) => {
    if (crashed.has(instance)) return
    crashed.add(instance)
    trace.push({ _tag: "Crashed", instance })
    hash.add(6)
    for (const character of instance) hash.add(character.charCodeAt(0))
    for (let index = ready.length - 1; index >= 0; index--) if (ready[index]!.instance === instance) ready.splice(index, 1)
  }
  const control: Control = { crash: crashNow }

  const scheduler: Scheduler.Scheduler = {
    scheduleTask: (task, _priority, fiber) => {
      const instance = fiber?.getFiberRef(currentInstance)
      if (instance !== undefined) {
        if (crashed.has(instance)) return
        instances.add(instance)
      }
      ready.push({ task, instance, fiber: fiber === undefined ? -1 : fiber.id().id })
    },
    shouldYield: (fiber) => (fiber.currentOpCount > 2048 ? 0 : false)
  }
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => now,
    unsafeCurrentTimeNanos: () => BigInt(Math.round(now * 1_000_000)),
    currentTimeMillis: Effect.sync(() => now),
    currentTimeNanos: Effect.sync(() => BigInt(Math.round(now * 1_000_000))),
    sleep: (duration) =>
      Effect.async<void>((resume) => {
        const timer: Timer = {
          at: now + Duration.toMillis(duration),
          order: timerOrder++,
          fire: () => resume(Effect.void),
          cancelled: false
        }
        if (duration.value._tag !== "Infinity") timers.push(timer)
        return Effect.sync(() => {
          timer.cancelled = true
        })
      })
  }

  const simulated = program.pipe(
    Effect.locally(currentControl, control),
    Effect.withClock(clock),
    Effect.withRandom(Random.make(options.seed)),
    Effect.withScheduler(scheduler)
  )
  const fiber = Effect.runFork(simulated, { scheduler, immediate: false })

  /** The earliest pending timer, removed; ties fire in the order they were set. */
  const nextTimer = (): Timer | undefined => {
    let earliest = -1
    for (let index = 0; index < timers.length; index++) {
      const timer = timers[index]!
      if (timer.cancelled) continue
      const best = earliest < 0 ? undefined : timers[earliest]!
      if (best === undefined || timer.at < best.at || (timer.at === best.at && timer.order < best.order)) earliest = index
    }
    if (earliest < 0) {
      timers.length = 0
      return undefined
    }
    return timers.splice(earliest, 1)[0]
  }

  let steps = 0
  let status: Result<A, E>["status"] = "completed"
  for (;;) {
    // The run ends with the program: instances still running are cut off there, as at the end of a test.
    if (fiber.unsafePoll() !== null) break
    if (crashProbability > 0) {
      for (const instance of aliveInstances()) {
        if (chooser.number() < crashProbability) crashNow(instance)
      }
    }
    if (ready.length > 0) {
      if (steps >= maxSteps) {
        status = "exhausted"
        break
      }
      const choice = decisions === undefined
        ? pct === undefined ? chooser.integer(ready.length) : pctChoice()
        : ready.length === 1
        ? 0
        : (decisions[decisionsUsed++] ?? 0) % ready.length
      trace.push({ _tag: "Ran", choice, of: ready.length })
      hash.add(0)
      hash.add(choice)
      hash.add(ready.length)
      const [chosen] = ready.splice(choice, 1)
      steps++
      chosen!.task()
      continue
    }
    const timer = nextTimer()
    if (timer === undefined) {
      status = fiber.unsafePoll() === null ? "stalled" : "completed"
      break
    }
    if (timer.at > now) {
      now = timer.at
      trace.push({ _tag: "Advanced", to: now })
      hash.add(1)
      hash.add(now)
    }
    timer.fire()
  }

  const exit = fiber.unsafePoll() ?? undefined
  hash.add(status === "completed" ? (exit !== undefined && Exit.isSuccess(exit) ? 2 : 3) : status === "stalled" ? 4 : 5)
  return {
    status,
    exit,
    trace,
    hash: hash.hex,
    token: encodeToken(options),
    endedAt: now
  }
}

const tokenPrefix = "keel-sim-1:"

// base64url of ASCII JSON, with the platform's btoa / atob (Node and browsers alike).
const toBase64Url = (text: string) => btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")
const fromBase64Url = (text: string) => atob(text.replace(/-/g, "+").replace(/_/g, "/"))

const encodeToken = (options: Options): string =>
  tokenPrefix + toBase64Url(JSON.stringify({
    seed: options.seed,
    ...(options.maxSteps === undefined ? {} : { maxSteps: options.maxSteps }),
    ...(options.startAt === undefined ? {} : { startAt: options.startAt }),
    ...(options.crashProbability === undefined ? {} : { crashProbability: options.crashProbability }),
    ...(options.decisions === undefined ? {} : { decisions: options.decisions }),
    ...(options.strategy === undefined ? {} : { strategy: options.strategy })
  }))

/** The options a token carries; throws `SimulationFailed` for text that is not a token. */
export const decodeToken = (token: string): Options => {
  if (!token.startsWith(tokenPrefix)) throw new SimulationFailed(`not a simulation token: ${token}`)
  let parsed: Options
  try {
    parsed = JSON.parse(fromBase64Url(token.slice(tokenPrefix.length))) as Options
  } catch {
    throw new SimulationFailed(`not a simulation token: ${token}`)
  }
  if (typeof parsed.seed !== "number") throw new SimulationFailed(`not a simulation token: ${token}`)
  return parsed
}

/** Runs `program` again down the path `token` names: the same choices, the same trace hash. */
export const replay = <A, E>(program: Effect.Effect<A, E>, token: string): Result<A, E> =>
  run(program, decodeToken(token))

/**
 * Runs `program` twice from `seed` and throws `SimulationFailed` if the two runs took different paths (their
 * trace hashes differ): something in the program escapes the simulation (`Date.now`, `Math.random`, a real
 * timer, a promise). Returns the first run.
 */
export const checkDeterminism = <A, E>(program: Effect.Effect<A, E>, options: Options): Result<A, E> => {
  const first = run(program, options)
  const second = run(program, options)
  if (first.hash !== second.hash) {
    throw new SimulationFailed(
      `seed ${options.seed} ran two different paths (${first.hash}, ${first.trace.length} steps; ` +
        `${second.hash}, ${second.trace.length} steps): the program escapes the simulation`
    )
  }
  return first
}

/** `result` in a line: how it ended, after how many steps, at what simulated time, with its token. */
export const describe = (result: Result<unknown, unknown>): string => {
  const ending = result.status !== "completed"
    ? result.status === "stalled"
      ? "stalled: nothing can run and no timer is pending (waiting on something outside the simulation, or deadlocked)"
      : "exhausted its steps (a livelock?)"
    : result.exit !== undefined && Exit.isFailure(result.exit)
    ? `failed: ${Cause.pretty(result.exit.cause).split("\n")[0]}`
    : "completed"
  return `${ending} after ${result.trace.length} steps at ${result.endedAt} ms; replay with ${result.token} (trace ${result.hash})`
}

/** A failing run `search` found, shrunk. */
export interface Found<A, E> {
  /** The minimal failing run: its token replays it. */
  readonly run: Result<A, E>
  /** How many schedules were tried before the first failure. */
  readonly tried: number
}

/** What `search` explores. */
export interface SearchOptions {
  /** Schedules tried, each a list of decisions fast-check generates. Default 200. */
  readonly runs?: number
  /** Seeds fast-check (so the search is reproducible) and every run (its Random and crashes). Default 1. */
  readonly seed?: number
  /** The longest decision list tried. Default 200. */
  readonly maxDecisions?: number
  /** Passed to every run. */
  readonly maxSteps?: number
  /** Passed to every run. */
  readonly crashProbability?: number
}

/**
 * Looks for a schedule under which `property` fails (returns false or throws) for `program`: fast-check
 * generates decision lists (see `Options.decisions`, each choice 0–7), and shrinks the first failing one to a minimal
 * failing run, shorter lists and smaller choices first. Returns that run (its token replays it) with how many
 * schedules were tried, or undefined when every schedule passed.
 *
 * @example
 * ```ts
 * import { Effect, Ref } from "effect"
 * import { Simulation } from "keel/testing"
 *
 * const racy = Effect.gen(function*() {
 *   const counter = yield* Ref.make(0)
 *   const increment = Effect.flatMap(Ref.get(counter), (seen) => Effect.zipRight(Effect.yieldNow(), Ref.set(counter, seen + 1)))
 *   yield* Effect.all([increment, increment], { concurrency: "unbounded" })
 *   return yield* Ref.get(counter)
 * })
 *
 * const found = Simulation.search(racy, (result) => result.exit?._tag === "Success" && result.exit.value === 2)
 * // found?.run.trace: the few choices that lose an update; found?.run.token replays them
 * ```
 */
export const search = <A, E>(
  program: Effect.Effect<A, E>,
  property: (result: Result<A, E>) => boolean | void,
  options: SearchOptions = {}
): Found<A, E> | undefined => {
  const seed = options.seed ?? 1
  const runWith = (decisions: ReadonlyArray<number>) =>
    run(program, {
      seed,
      decisions,
      ...(options.maxSteps === undefined ? {} : { maxSteps: options.maxSteps }),
      ...(options.crashProbability === undefined ? {} : { crashProbability: options.crashProbability })
    })
  const details = fc.check(
    fc.property(fc.array(fc.nat({ max: 7 }), { maxLength: options.maxDecisions ?? 200 }), (decisions) =>
      property(runWith(decisions)) !== false),
    { numRuns: options.runs ?? 200, seed }
  )
  if (!details.failed || details.counterexample === null) return undefined
  const [decisions] = details.counterexample
  return { run: runWith(decisions), tried: details.numRuns }
}
