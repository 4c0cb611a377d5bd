/**
 * TaskGroup — Tokio's JoinSet and TaskTracker in one: tasks that belong to a group, not to their caller.
 *
 * Each spawned task runs in a fiber of its own, kept in a `FiberMap` that lives in the group's Scope, so
 * closing that Scope interrupts every task still running or still waiting for a slot, and waits for them:
 * no task outlives its group. A task's end is recorded exactly once, by an observer on its fiber, with the
 * label it was spawned with; the observer also sees a task interrupted before it ever ran. Forking,
 * registering and observing happen in one synchronous step, so no join, deadline or failure can fall
 * between a task's fork and its registration.
 *
 * `join` waits until nothing is pending and hands back every result not yet taken, split into successes,
 * typed failures, defects and interruptions (the seed's double `?`, kept apart). In `failFast` mode the
 * group is an errgroup: the first failure or defect closes it and interrupts the rest, and tasks still
 * waiting for a slot never start. `close` / `wait` / `waitFor` are TaskTracker's, with the deadline its
 * users otherwise write by hand.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberMap from "effect/FiberMap"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import type * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Scope from "effect/Scope"
import { joinTask, ShuttingDown } from "./Errors.js"
import * as MetricSeries from "./internal/MetricSeries.js"
import * as Validation from "./internal/Validation.js"
import * as Waiters from "./internal/Waiters.js"
import type { TaskFailed, TaskPanicked } from "./Errors.js"
import type { Settlement } from "./Tracker.js"

export type { Settlement } from "./Tracker.js"

/** `collect` lets every task finish (JoinSet); `failFast` interrupts the rest at the first failure (errgroup). */
export type Mode = "collect" | "failFast"

/** What `make` takes. Only `mode` is required. */
export interface Options {
  /** What a failing task does to the others: nothing (`collect`) or interrupt them (`failFast`); see `Mode`. */
  readonly mode: Mode
  /**
   * At most this many tasks run at once; later ones wait for a slot, and count as in the group meanwhile.
   * A positive integer. Default: no limit.
   */
  readonly concurrency?: number
  /**
   * Names the group in the reason of its `ShuttingDown` errors, in its tasks' logs (`group=<name>`) and in the
   * series of `metrics`. Default `task-group`.
   */
  readonly name?: string
}

/**
 * A handle on one spawned task, as `spawn` returns it. Dropping it does not stop the task: the group keeps it.
 *
 * @typeParam A - What the task succeeds with.
 * @typeParam E - The task's typed failures.
 */
export interface Task<A, E> {
  /**
   * The label given to `spawn`: names the task in results, in errors, in its logs (`task=<label>`) and in
   * reports. Labels need not be unique.
   */
  readonly label: string
  /** The task's value, `TaskFailed` for a typed failure, `TaskPanicked` for a defect; interrupted if the task was. */
  readonly join: Effect.Effect<A, TaskFailed<E> | TaskPanicked>
  /** Interrupts the task (running or waiting for a slot) and waits until it has ended. */
  readonly interrupt: Effect.Effect<void>
}

/**
 * A task that succeeded, in `Results.succeeded`.
 *
 * @typeParam A - What the task succeeds with.
 */
export interface Succeeded<A> {
  /** The task's label, as given to `spawn`. */
  readonly label: string
  /** What the task succeeded with. */
  readonly value: A
}

/**
 * A task that failed with a typed error and no defect, in `Results.failed`.
 *
 * @typeParam E - The task's typed failures.
 */
export interface Failed<E> {
  /** The task's label, as given to `spawn`. */
  readonly label: string
  /** The task's typed failure (the first one, if its Cause holds several). */
  readonly error: E
}

/** A task that died with a defect, in `Results.panicked`. A defect outranks a typed failure in the same Cause. */
export interface Panicked {
  /** The task's label, as given to `spawn`. */
  readonly label: string
  /** The defect (the first one, if its Cause holds several): typically a thrown value or an `Effect.die` argument. */
  readonly defect: unknown
}

/**
 * A task that was interrupted, with no failure or defect, in `Results.interrupted`: by its `interrupt`, by the
 * group's Scope closing, by `waitFor`'s deadline, or by a sibling's failure in `failFast` mode.
 */
export interface Interrupted {
  /** The task's label, as given to `spawn`. */
  readonly label: string
  /** False when the task was interrupted while still waiting for a slot. */
  readonly started: boolean
}

/**
 * How tasks ended, each with its label, in spawn order, as `join` and `poll` take them. Every task appears in
 * exactly one list, of exactly one `Results`: taking results removes them from the group.
 *
 * @typeParam A - What the tasks succeed with.
 * @typeParam E - The tasks' typed failures.
 */
export interface Results<A, E> {
  /** Tasks that succeeded, with their values. */
  readonly succeeded: ReadonlyArray<Succeeded<A>>
  /** Tasks that failed with a typed error (and no defect), with their errors. */
  readonly failed: ReadonlyArray<Failed<E>>
  /** Tasks that died with a defect, with their defects. */
  readonly panicked: ReadonlyArray<Panicked>
  /** Tasks that were interrupted, with whether they had started. */
  readonly interrupted: ReadonlyArray<Interrupted>
}

/**
 * A group of tasks living in a Scope, as `make` returns it. Every task of the group succeeds with `A` or fails
 * with `E`; each runs in a fiber of its own, and closing the group's Scope interrupts and awaits them all.
 *
 * @typeParam A - What the tasks succeed with.
 * @typeParam E - The tasks' typed failures.
 */
export interface TaskGroup<A, E> {
  /** The group's name: `Options.name`, default `task-group`. */
  readonly name: string
  /** The mode the group was made with. */
  readonly mode: Mode
  /**
   * Starts `effect` as a task of the group (or queues it for a slot under `concurrency`). Fails with
   * `ShuttingDown` once the group is closed: by `close`, by its Scope, or by a failure in `failFast` mode.
   * The task runs with the spawner's context and fiber refs (log annotations included), not as its child.
   *
   * @typeParam R - The services `effect` needs, provided from the spawner's context.
   */
  readonly spawn: <R>(label: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<Task<A, E>, ShuttingDown, R>
  /**
   * Waits until no task is pending (tasks spawned meanwhile included) and takes the results of every task
   * that ended and whose result no earlier `join` or `poll` took. It does not close the group.
   */
  readonly join: Effect.Effect<Results<A, E>>
  /** Takes the results of the tasks that have ended so far, without waiting. */
  readonly poll: Effect.Effect<Results<A, E>>
  /** Refuses new tasks from now on; tasks already spawned go on. Idempotent (the first reason is kept). */
  readonly close: (reason?: string) => Effect.Effect<void>
  /**
   * Whether the group refuses new tasks: after `close`, once its Scope is closing, or after the first failure
   * or defect in `failFast` mode.
   */
  readonly isClosed: Effect.Effect<boolean>
  /** Labels of the tasks not ended yet, running or waiting for a slot, in spawn order. */
  readonly pending: Effect.Effect<ReadonlyArray<string>>
  /** Completes once the group is closed and no task is pending. */
  readonly wait: Effect.Effect<void>
  /**
   * Waits like `wait`, but once `deadline` has passed interrupts every task still pending, waits for them
   * to end and lists them. `finished` counts the tasks that ended on their own meanwhile. It does not close
   * the group: call `close` first, or it always runs until the deadline.
   */
  readonly waitFor: (deadline: Duration.DurationInput) => Effect.Effect<Settlement>
}

type End<A, E> =
  | { readonly _tag: "Succeeded"; readonly value: A }
  | { readonly _tag: "Failed"; readonly error: E }
  | { readonly _tag: "Panicked"; readonly defect: unknown }
  | { readonly _tag: "Interrupted" }

interface Entry<A, E> {
  readonly id: number
  readonly label: string
  started: boolean
  end: End<A, E> | undefined
}

interface Ended<A, E> extends Entry<A, E> {
  readonly end: End<A, E>
}

// The same precedence as `joinTask`: a defect outranks a failure, and interruption alone is neither.
const endOf = <A, E>(exit: Exit.Exit<A, E>): End<A, E> => {
  if (Exit.isSuccess(exit)) return { _tag: "Succeeded", value: exit.value }
  const defect = Chunk.head(Cause.defects(exit.cause))
  if (Option.isSome(defect)) return { _tag: "Panicked", defect: defect.value }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) return { _tag: "Failed", error: failure.value }
  return { _tag: "Interrupted" }
}

const split = <A, E>(ended: ReadonlyArray<Ended<A, E>>): Results<A, E> => {
  const succeeded: Array<Succeeded<A>> = []
  const failed: Array<Failed<E>> = []
  const panicked: Array<Panicked> = []
  const interrupted: Array<Interrupted> = []
  for (const { end, label, started } of [...ended].sort((left, right) => left.id - right.id)) {
    switch (end._tag) {
      case "Succeeded":
        succeeded.push({ label, value: end.value })
        break
      case "Failed":
        failed.push({ label, error: end.error })
        break
      case "Panicked":
        panicked.push({ label, defect: end.defect })
        break
      case "Interrupted":
        interrupted.push({ label, started })
        break
    }
  }
  return { succeeded, failed, panicked, interrupted }
}

const validate = (options: Options) =>
  Validation.validate("TaskGroup.make", [[
    "concurrency",
    options.concurrency,
    options.concurrency === undefined || Validation.isIntegerFrom(options.concurrency, 1),
    Validation.integerFrom(1)
  ]])

const pendingGauge = Metric.gauge("keel_task_group_pending", {
  description: "tasks of a task group not ended yet, running or waiting for a slot"
})

/** The metric series of one group, as `metrics` returns them. */
export interface Metrics {
  /** Gauge `keel_task_group_pending`: tasks spawned and not ended (running or waiting for a slot). */
  readonly pending: Metric.Metric.Gauge<number>
}

/**
 * The metrics of the group named `group` (tagged `group=<name>`), to read them or to export them. Every
 * group updates them as it goes; two groups of one name share their series.
 */
export const metrics = (group: string): Metrics => ({
  pending: MetricSeries.series("group", group).of(pendingGauge)
})

/**
 * Builds a group in the current Scope; closing the Scope refuses new tasks, interrupts the tasks still running
 * or waiting for a slot, and waits for them. Dies if `concurrency` is not a positive integer.
 *
 * @typeParam A - What the tasks succeed with. Default `unknown`.
 * @typeParam E - The tasks' typed failures. Default `unknown`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TaskGroup } from "keel"
 *
 * const fetchAll = (urls: ReadonlyArray<string>) =>
 *   Effect.scoped(Effect.gen(function*() {
 *     const group = yield* TaskGroup.make<number, string>({ mode: "collect", concurrency: 4 })
 *     for (const url of urls) {
 *       yield* group.spawn(url, url.startsWith("https:") ? Effect.succeed(url.length) : Effect.fail("not https"))
 *     }
 *     const results = yield* group.join
 *     return { ok: results.succeeded.length, failed: results.failed.map((failed) => failed.label) }
 *   }))
 * ```
 */
export const make = <A = unknown, E = unknown>(options: Options): Effect.Effect<TaskGroup<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    yield* validate(options)
    const name = options.name ?? "task-group"
    const tags = MetricSeries.series("group", name).labels
    const mode = options.mode
    const slots = options.concurrency === undefined ? undefined : yield* Effect.makeSemaphore(options.concurrency)
    const fibers = yield* FiberMap.make<number, A, E>()
    const pending = new Map<Fiber.RuntimeFiber<A, E>, Entry<A, E>>()
    let ended: Array<Ended<A, E>> = []
    let endedOnTheirOwn = 0
    let closedReason: string | undefined
    let failedFast = false
    let nextId = 0
    const waiters = Waiters.make()
    const until = waiters.until

    const tripFailFast = (culprit: Entry<A, E>, interruptor: FiberId.FiberId) => {
      failedFast = true
      closedReason ??= `task group ${name}: task ${culprit.label} ${culprit.end?._tag === "Panicked" ? "panicked" : "failed"}`
      for (const sibling of pending.keys()) sibling.unsafeInterruptAsFork(interruptor)
    }

    // Runs in the task fiber's exit path, once, whether the task ran or was interrupted before it started.
    const record = (fiber: Fiber.RuntimeFiber<A, E>, entry: Entry<A, E>, exit: Exit.Exit<A, E>) => {
      pending.delete(fiber)
      pendingGauge.unsafeUpdate(pending.size, tags)
      const end = endOf(exit)
      entry.end = end
      ended.push({ ...entry, end })
      if (end._tag !== "Interrupted") endedOnTheirOwn++
      if (mode === "failFast" && !failedFast && (end._tag === "Failed" || end._tag === "Panicked")) {
        tripFailFast(entry, fiber.id())
      }
      waiters.wake()
    }

    const spawn = <R>(label: string, effect: Effect.Effect<A, E, R>): Effect.Effect<Task<A, E>, ShuttingDown, R> =>
      Effect.withFiberRuntime((spawner) => {
        if (closedReason !== undefined) return Effect.fail(new ShuttingDown({ reason: closedReason }))
        const entry: Entry<A, E> = { id: nextId++, label, started: false, end: undefined }
        // Annotated, so its logs and the shutdown report's list of what is still alive name it.
        const start = Effect.annotateLogs(
          Effect.suspend(() => {
            if (failedFast) return Effect.interrupt
            entry.started = true
            return effect
          }),
          { group: name, task: label }
        )
        // Like `FiberMap.run` (the spawner's context and fiber refs, default flags), but synchronous.
        const runtime = Runtime.make({
          context: spawner.currentContext as Context.Context<R>,
          fiberRefs: spawner.getFiberRefs(),
          runtimeFlags: Runtime.defaultRuntime.runtimeFlags
        })
        const fiber = Runtime.runFork(runtime)(slots === undefined ? start : slots.withPermits(1)(start))
        FiberMap.unsafeSet(fibers, entry.id, fiber)
        pending.set(fiber, entry)
        pendingGauge.unsafeUpdate(pending.size, tags)
        fiber.addObserver((exit) => record(fiber, entry, exit))
        return Effect.succeed<Task<A, E>>({
          label,
          join: joinTask(label, fiber),
          interrupt: Effect.asVoid(Fiber.interrupt(fiber))
        })
      })

    const close = (reason?: string) =>
      Effect.sync(() => {
        closedReason ??= reason ?? `task group ${name} is closed`
        waiters.wake()
      })
    // Registered after the FiberMap, so it runs first: spawns are refused before the tasks are interrupted.
    yield* Effect.addFinalizer(() => close(`task group ${name} is closing with its scope`))

    const poll = Effect.sync(() => {
      const taken = ended
      ended = []
      return split(taken)
    })

    const wait = until(() => closedReason !== undefined && pending.size === 0)

    const waitFor = (deadline: Duration.DurationInput): Effect.Effect<Settlement> =>
      Effect.suspend(() => {
        const endedOnTheirOwnAtStart = endedOnTheirOwn
        let cut: ReadonlyArray<Entry<A, E>> = []
        const cutAtDeadline = Effect.sleep(deadline).pipe(
          Effect.zipRight(Effect.suspend(() => {
            cut = [...pending.values()]
            return Fiber.interruptAll([...pending.keys()])
          }))
        )
        return Effect.raceFirst(wait, cutAtDeadline).pipe(
          Effect.map(() => ({
            finished: endedOnTheirOwn - endedOnTheirOwnAtStart,
            // A task cut at the deadline that still ended on its own first counts as finished.
            interrupted: cut.filter((entry) => entry.end?._tag === "Interrupted").map((entry) => entry.label)
          }))
        )
      })

    const group: TaskGroup<A, E> = {
      name,
      mode,
      spawn,
      join: Effect.zipRight(until(() => pending.size === 0), poll),
      poll,
      close,
      isClosed: Effect.sync(() => closedReason !== undefined),
      pending: Effect.sync(() => [...pending.values()].map((entry) => entry.label)),
      wait,
      waitFor
    }
    return group
  })
