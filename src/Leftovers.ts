/**
 * Leftovers — what was still alive when a drain was cut: the answer to "why won't it exit?".
 *
 * When the deadline (or a second signal) ends a drain, the shutdown report should say what was left
 * rather than exit blind. Two things are collected, at no cost before that moment:
 *
 * - the fibers still alive, found by walking Effect's fiber tree from its roots (every `runFork` and
 *   daemon fiber is a root, and each fiber knows its children), minus the fiber collecting and its own
 *   ancestors and descendants. Each is named by its span, else its log annotations (WorkerPool workers
 *   carry `pool` and `worker`), else its id, with its age;
 * - the resources Keel's own gauges say are still held: permits of concurrency limits, callers waiting at
 *   limits, jobs running in worker pools, tasks of task groups not ended.
 *
 * The walk is bounded (`maxFibers` listed, `maxVisited` visited) and each fiber is asked for its children
 * with a bound in scheduler turns, so collecting never hangs on a fiber that does not answer.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberStatus from "effect/FiberStatus"
import * as HashMap from "effect/HashMap"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"

/** A fiber still alive when `collect` ran. */
export interface AliveFiber {
  /** The fiber's id number (`FiberId`'s `id`), shown as `#<id>` in reports. */
  readonly id: number
  /** Its name for reports: the one `CollectOptions.names` gives it, else `nameOf`'s. */
  readonly name: string
  /**
   * How long ago (ms) the fiber was made. Effect stamps fiber ids with the wall clock and this reads it against
   * Clock, so it is 0 under TestClock.
   */
  readonly ageMs: number
  /** The fibers it waits for, when it is suspended joining or awaiting them. */
  readonly waitingOn: ReadonlyArray<number>
}

/** Something one of Keel's gauges says is still held: permits, callers waiting at a limit, jobs or tasks. */
export interface HeldResource {
  /** What is held, count included, e.g. `2 permits of concurrency limit "http"`. */
  readonly what: string
  /** How many: the gauge's value, always positive. */
  readonly count: number
}

/** What `collect` found: the fibers still alive and the resources still held. */
export interface Leftovers {
  /** The alive fibers listed, at most `maxFibers`, roots first, then their children, level by level. */
  readonly fibers: ReadonlyArray<AliveFiber>
  /** Alive fibers found past `maxFibers`, not listed. */
  readonly moreFibers: number
  /**
   * One entry per non-zero gauge series: a limit's permits or waiting callers, a pool's running jobs, a group's
   * pending tasks. Empty when nothing is held.
   */
  readonly held: ReadonlyArray<HeldResource>
}

/** Options of `collect`; all optional. */
export interface CollectOptions {
  /** Fibers listed; the rest are counted. Default 20. */
  readonly maxFibers?: number
  /** Fibers visited in the walk. Default 10,000. */
  readonly maxVisited?: number
  /** Fibers of the caller's own machinery, not to be listed (with their descendants). */
  readonly ignore?: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>
  /** Names for fibers the caller knows (the program it runs), ahead of spans and annotations. */
  readonly names?: ReadonlyMap<Fiber.RuntimeFiber<unknown, unknown>, string>
}

/** Scheduler turns a fiber gets to answer a question (its children, its status). */
const answerTurns = 50

/** What `ask` answers, or `otherwise` if the fiber has not answered within `answerTurns` scheduler turns. */
const askBounded = <A>(ask: Effect.Effect<A>, otherwise: A) =>
  Effect.raceFirst(ask, Effect.as(Effect.repeatN(Effect.yieldNow(), answerTurns), otherwise))

const childrenOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
  askBounded(Fiber.children(fiber), [] as Array<Fiber.RuntimeFiber<unknown, unknown>>)

const waitingOn = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
  Effect.map(askBounded(Effect.map(Fiber.dump(fiber), (dump) => dump.status), undefined), (status) =>
    status !== undefined && FiberStatus.isSuspended(status)
      ? [...FiberId.ids(status.blockingOn)].filter((id) => id !== fiber.id().id)
      : [])

/** The annotation that names a fiber outright (`Effect.annotateLogs("fiber.name", "lease-renewer")`). */
export const nameAnnotation = "fiber.name"

/**
 * A fiber's name for reports: its `fiber.name` annotation, else its span's name, else its other log
 * annotations (`pool=jobs worker=3`), else `#<id>`.
 */
export const nameOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): string => {
  const annotations = fiber.getFiberRef(FiberRef.currentLogAnnotations)
  const named = HashMap.get(annotations, nameAnnotation)
  if (Option.isSome(named)) return String(named.value)
  const span = fiber.currentSpan
  if (span !== undefined && span._tag === "Span") return span.name
  const entries = HashMap.toEntries(annotations)
  if (entries.length > 0) return entries.map(([key, value]) => `${key}=${String(value)}`).join(" ")
  return `#${fiber.id().id}`
}

const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? "" : "s"}`

/** Gauges of Keel components whose non-zero value means something is still held, and how to say it. */
const heldGauges: ReadonlyArray<{ readonly name: string; readonly describe: (count: number, owner: string) => string }> = [
  { name: "keel_middleware_in_flight", describe: (count, owner) => `${plural(count, "permit")} of concurrency limit "${owner}"` },
  { name: "keel_middleware_waiting", describe: (count, owner) => `${plural(count, "caller")} waiting at limit "${owner}"` },
  { name: "keel_pool_in_flight", describe: (count, owner) => `${plural(count, "job")} running in worker pool "${owner}"` },
  { name: "keel_task_group_pending", describe: (count, owner) => `${plural(count, "task")} not ended in task group "${owner}"` }
]

/** The tag naming the component a gauge belongs to. */
const ownerTags = new Set(["middleware", "pool", "group"])

const heldResources = Effect.sync((): Array<HeldResource> => {
  const held: Array<HeldResource> = []
  for (const pair of Metric.unsafeSnapshot()) {
    const gauge = heldGauges.find((known) => known.name === pair.metricKey.name)
    if (gauge === undefined || !MetricState.isGaugeState(pair.metricState)) continue
    const count = Number(pair.metricState.value)
    if (count <= 0) continue
    const owner = pair.metricKey.tags.find((tag) => ownerTags.has(tag.key))?.value ?? "?"
    held.push({ what: gauge.describe(count, owner), count })
  }
  return held
})

/**
 * The fibers alive besides the caller (and its ancestors and descendants), and the resources still held.
 * Bounded: it visits at most `maxVisited` fibers and gives each a few scheduler turns to answer, so it
 * never hangs on a fiber that does not.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Leftovers } from "keel"
 *
 * const whyNotExiting = Effect.gen(function*() {
 *   const leftovers = yield* Leftovers.collect({ maxFibers: 10 })
 *   if (!Leftovers.isEmpty(leftovers)) yield* Effect.logWarning(Leftovers.render(leftovers).join("\n"))
 * })
 * ```
 */
export const collect = (options: CollectOptions = {}): Effect.Effect<Leftovers> =>
  Effect.withFiberRuntime((self) =>
    Effect.gen(function*() {
      const maxFibers = options.maxFibers ?? 20
      const maxVisited = options.maxVisited ?? 10_000
      const ignored = new Set<Fiber.RuntimeFiber<unknown, unknown>>([self, ...(options.ignore ?? [])])
      const parentOf = new Map<Fiber.RuntimeFiber<unknown, unknown>, Fiber.RuntimeFiber<unknown, unknown>>()
      const visited: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
      let frontier: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>> = yield* Fiber.roots
      const seen = new Set(frontier)
      while (frontier.length > 0 && visited.length < maxVisited) {
        const next: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
        for (const fiber of frontier) {
          if (visited.length >= maxVisited) break
          visited.push(fiber)
          // The caller's own descendants, and those of the fibers it said to ignore, are its business.
          if (ignored.has(fiber)) continue
          for (const child of yield* childrenOf(fiber)) {
            if (seen.has(child)) continue
            seen.add(child)
            parentOf.set(child, fiber)
            next.push(child)
          }
        }
        frontier = next
      }
      const excluded = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
      for (let fiber: Fiber.RuntimeFiber<unknown, unknown> | undefined = self; fiber !== undefined; fiber = parentOf.get(fiber)) {
        excluded.add(fiber)
      }
      const now = yield* Clock.currentTimeMillis
      const alive = visited.filter((fiber) => !excluded.has(fiber) && !ignored.has(fiber) && fiber.unsafePoll() === null)
      const listed: Array<AliveFiber> = []
      for (const fiber of alive.slice(0, maxFibers)) {
        listed.push({
          id: fiber.id().id,
          name: options.names?.get(fiber) ?? nameOf(fiber),
          ageMs: Math.max(0, now - fiber.id().startTimeMillis),
          waitingOn: yield* waitingOn(fiber)
        })
      }
      return {
        fibers: listed,
        moreFibers: Math.max(0, alive.length - maxFibers),
        held: yield* heldResources
      }
    })
  )

/**
 * The leftovers as report lines (indented by two spaces), as the shutdown report prints them, e.g.
 * `  still alive: 2 fibers` then one line per fiber; none when nothing was left.
 */
export const render = (leftovers: Leftovers): Array<string> => {
  const lines: Array<string> = []
  const total = leftovers.fibers.length + leftovers.moreFibers
  if (total > 0) {
    lines.push(`  still alive: ${plural(total, "fiber")}`)
    for (const fiber of leftovers.fibers) {
      const waiting = fiber.waitingOn.length > 0 ? `, waiting on ${fiber.waitingOn.map((id) => `#${id}`).join(", ")}` : ""
      const name = fiber.name === `#${fiber.id}` ? "" : ` ${fiber.name}`
      lines.push(`    #${fiber.id}${name} (alive ${fiber.ageMs} ms${waiting})`)
    }
    if (leftovers.moreFibers > 0) lines.push(`    … and ${leftovers.moreFibers} more`)
  }
  if (leftovers.held.length > 0) {
    lines.push(`  still held: ${leftovers.held.map((held) => held.what).join(", ")}`)
  }
  return lines
}

/** Whether nothing was left: no fiber alive (listed or not), nothing held. */
export const isEmpty = (leftovers: Leftovers): boolean =>
  leftovers.fibers.length === 0 && leftovers.moreFibers === 0 && leftovers.held.length === 0
