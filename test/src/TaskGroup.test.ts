/**
 * TaskGroup behaviour a user relies on, case by case: joining one task (failure and panic kept apart),
 * joining the group (results split by outcome, each result taken once), failFast cutting the siblings,
 * close / wait / waitFor with a deadline in virtual time, and the Scope as the tasks' upper bound.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Data, Effect, Exit, Fiber, Option, Scope, Supervisor, TestClock } from "effect"
import { ShuttingDown, TaskFailed, TaskPanicked } from "../../src/Errors.js"
import * as TaskGroup from "../../src/TaskGroup.js"

class Boom extends Data.TaggedError("Boom")<{ readonly task: string }> {}

const succeedAfter = <A>(ms: number, value: A) => Effect.as(Effect.sleep(ms), value)
const failAfter = (ms: number, task: string) => Effect.zipRight(Effect.sleep(ms), Effect.fail(new Boom({ task })))
const dieAfter = (ms: number, defect: unknown) => Effect.zipRight(Effect.sleep(ms), Effect.die(defect))

const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)

/** Joins a fiber that must have ended by now, so a broken group fails the test instead of hanging it. */
const joinEnded = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.flatMap(Fiber.poll(fiber), (polled) => {
    expect(Option.isSome(polled), "the fiber should have ended by now").toBe(true)
    return Fiber.join(fiber)
  })

describe("TaskGroup: joining one task", () => {
  it.scoped("Task.join keeps 'the task failed' and 'the task panicked' apart, each naming the task", () =>
    Effect.gen(function*() {
      const group = yield* TaskGroup.make<string, Boom>({ mode: "collect" })
      const ok = yield* group.spawn("ok", Effect.succeed("value"))
      const failing = yield* group.spawn("failing", Effect.fail(new Boom({ task: "failing" })))
      const dying = yield* group.spawn("dying", Effect.die("kaput"))
      const stuck = yield* group.spawn("stuck", Effect.never)

      expect(ok.label).toBe("ok")
      expect(yield* ok.join).toBe("value")
      const failure = yield* Effect.flip(failing.join)
      expect(failure).toBeInstanceOf(TaskFailed)
      expect(failure).toMatchObject({ _tag: "TaskFailed", task: "failing", error: new Boom({ task: "failing" }) })
      const panic = yield* Effect.flip(dying.join)
      expect(panic).toBeInstanceOf(TaskPanicked)
      expect(panic).toMatchObject({ _tag: "TaskPanicked", task: "dying", defect: "kaput" })
      // One error channel, matched by tag.
      const described = yield* Effect.forEach([failing, dying], (task) =>
        task.join.pipe(
          Effect.catchTags({
            TaskFailed: (error) => Effect.succeed(`failed: ${error.error.task}`),
            TaskPanicked: (error) => Effect.succeed(`panicked: ${String(error.defect)}`)
          })
        ))
      expect(described).toEqual(["failed: failing", "panicked: kaput"])
      // An interrupted task is neither: its joiner is interrupted too.
      yield* stuck.interrupt
      const joinedStuck = yield* Effect.exit(stuck.join)
      expect(Exit.isInterrupted(joinedStuck)).toBe(true)
    }))
})

describe("TaskGroup: joining the group", () => {
  it.scoped("join waits for every task and splits the results by outcome, each with its label, in spawn order", () =>
    Effect.gen(function*() {
      const group = yield* TaskGroup.make<number, Boom>({ mode: "collect" })
      yield* group.spawn("a", succeedAfter(10, 1))
      yield* group.spawn("b", failAfter(20, "b"))
      yield* group.spawn("c", dieAfter(5, "c panicked"))
      const stuck = yield* group.spawn("d", Effect.never)
      yield* group.spawn("e", succeedAfter(40, 5))
      const joining = yield* Effect.fork(group.join)
      yield* TestClock.adjust(30)
      expect(yield* isDone(joining)).toBe(false)
      expect(yield* group.pending).toEqual(["d", "e"])
      yield* stuck.interrupt
      yield* TestClock.adjust(9)
      expect(yield* isDone(joining)).toBe(false)
      yield* TestClock.adjust(1)
      expect(yield* joinEnded(joining)).toEqual({
        succeeded: [{ label: "a", value: 1 }, { label: "e", value: 5 }],
        failed: [{ label: "b", error: new Boom({ task: "b" }) }],
        panicked: [{ label: "c", defect: "c panicked" }],
        interrupted: [{ label: "d", started: true }]
      })
      expect(yield* group.isClosed).toBe(false)
    }))

  it.scoped("join also waits for tasks spawned while it waits, and each result is taken by one join only", () =>
    Effect.gen(function*() {
      const empty = { succeeded: [], failed: [], panicked: [], interrupted: [] }
      const group = yield* TaskGroup.make<string, never>({ mode: "collect" })
      yield* group.spawn("a", succeedAfter(10, "a"))
      const joining = yield* Effect.fork(group.join)
      yield* TestClock.adjust(5)
      yield* group.spawn("b", succeedAfter(10, "b"))
      yield* TestClock.adjust(6)
      expect(yield* isDone(joining)).toBe(false)
      yield* TestClock.adjust(4)
      const first = yield* joinEnded(joining)
      expect(first.succeeded).toEqual([{ label: "a", value: "a" }, { label: "b", value: "b" }])
      expect(yield* group.join).toEqual(empty)

      yield* group.spawn("c", succeedAfter(10, "c"))
      expect(yield* group.poll).toEqual(empty)
      yield* TestClock.adjust(10)
      expect(yield* group.poll).toEqual({ ...empty, succeeded: [{ label: "c", value: "c" }] })
      expect(yield* group.join).toEqual(empty)
    }))
})

describe("TaskGroup: failFast", () => {
  it.effect("the first failure interrupts every running sibling at that instant; queued ones never start", () =>
    Effect.gen(function*() {
      const supervisor = yield* Supervisor.track
      const interruptedAt = new Map<string, number>()
      const started: Array<string> = []
      const slow = (label: string, ms: number) =>
        Effect.sync(() => started.push(label)).pipe(
          Effect.zipRight(succeedAfter(ms, 0)),
          Effect.onInterrupt(() => Effect.map(Clock.currentTimeMillis, (now) => void interruptedAt.set(label, now)))
        )
      const results = yield* Effect.scoped(Effect.gen(function*() {
        const group = yield* TaskGroup.make<number, Boom>({ mode: "failFast", concurrency: 3, name: "fetchers" })
        yield* group.spawn("slow", slow("slow", 100))
        yield* group.spawn("failing", Effect.zipRight(Effect.sync(() => started.push("failing")), failAfter(20, "failing")))
        yield* group.spawn("slower", slow("slower", 200))
        yield* group.spawn("queued", slow("queued", 1))
        const joining = yield* Effect.fork(group.join)
        yield* TestClock.adjust(19)
        expect(yield* isDone(joining)).toBe(false)
        expect((yield* supervisor.value).length).toBe(5) // the four tasks and the joiner
        yield* TestClock.adjust(1)
        const results = yield* joinEnded(joining)
        // Nothing is left running once join returns, and the Scope is still open.
        expect(yield* supervisor.value).toEqual([])
        const refused = yield* Effect.flip(group.spawn("late", Effect.succeed(0)))
        expect(refused).toBeInstanceOf(ShuttingDown)
        expect(refused.reason).toBe("task group fetchers: task failing failed")
        expect(yield* group.isClosed).toBe(true)
        return results
      }).pipe(Effect.supervised(supervisor)))
      expect(results).toEqual({
        succeeded: [],
        failed: [{ label: "failing", error: new Boom({ task: "failing" }) }],
        panicked: [],
        interrupted: [{ label: "slow", started: true }, { label: "slower", started: true }, {
          label: "queued",
          started: false
        }]
      })
      expect(started).toEqual(["slow", "failing", "slower"])
      expect(Object.fromEntries(interruptedAt)).toEqual({ slow: 20, slower: 20 })
    }))

  it.scoped("a defect trips failFast too, while collect lets the siblings finish", () =>
    Effect.gen(function*() {
      const failFast = yield* TaskGroup.make<string, never>({ mode: "failFast" })
      const collect = yield* TaskGroup.make<string, never>({ mode: "collect" })
      for (const group of [failFast, collect]) {
        yield* group.spawn("dies", dieAfter(10, "bug"))
        yield* group.spawn("works", succeedAfter(50, "done"))
      }
      const joinedFast = yield* Effect.fork(failFast.join)
      const joinedAll = yield* Effect.fork(collect.join)
      yield* TestClock.adjust(10)
      expect(yield* joinEnded(joinedFast)).toEqual({
        succeeded: [],
        failed: [],
        panicked: [{ label: "dies", defect: "bug" }],
        interrupted: [{ label: "works", started: true }]
      })
      expect(yield* isDone(joinedAll)).toBe(false)
      yield* TestClock.adjust(40)
      expect(yield* joinEnded(joinedAll)).toEqual({
        succeeded: [{ label: "works", value: "done" }],
        failed: [],
        panicked: [{ label: "dies", defect: "bug" }],
        interrupted: []
      })
      expect(yield* collect.isClosed).toBe(false)
    }))
})

describe("TaskGroup: close, wait, waitFor", () => {
  it.scoped("close refuses new tasks with ShuttingDown; tasks already spawned, queued ones included, still run", () =>
    Effect.gen(function*() {
      const group = yield* TaskGroup.make<string, never>({ mode: "collect", concurrency: 1 })
      yield* group.spawn("a", succeedAfter(10, "a"))
      yield* group.spawn("b", succeedAfter(10, "b"))
      yield* group.close("maintenance")
      yield* group.close("ignored: the first reason is kept")
      expect(yield* group.isClosed).toBe(true)
      expect(yield* Effect.flip(group.spawn("c", Effect.succeed("c")))).toEqual(new ShuttingDown({ reason: "maintenance" }))
      const joining = yield* Effect.fork(group.join)
      yield* TestClock.adjust(10)
      expect(yield* group.pending).toEqual(["b"])
      yield* TestClock.adjust(10)
      expect((yield* joinEnded(joining)).succeeded).toEqual([{ label: "a", value: "a" }, { label: "b", value: "b" }])
    }))

  it.scoped("wait completes only once the group is closed and empty", () =>
    Effect.gen(function*() {
      const group = yield* TaskGroup.make<string, never>({ mode: "collect" })
      yield* group.spawn("a", succeedAfter(10, "a"))
      const waiting = yield* Effect.fork(group.wait)
      yield* TestClock.adjust(20)
      expect(yield* isDone(waiting)).toBe(false) // empty, but not closed
      yield* group.spawn("b", succeedAfter(10, "b"))
      yield* group.close()
      yield* TestClock.adjust(9)
      expect(yield* isDone(waiting)).toBe(false) // closed, but not empty
      yield* TestClock.adjust(1)
      yield* joinEnded(waiting)

      const idle = yield* TaskGroup.make({ mode: "collect" })
      yield* idle.close()
      yield* idle.wait
    }))

  it.scoped("waitFor interrupts, at the deadline in virtual time, what is left, queued tasks included, and lists it", () =>
    Effect.gen(function*() {
      const group = yield* TaskGroup.make<string, never>({ mode: "collect", concurrency: 2 })
      // Two slots: short ends at 50, then queuedShort runs 50–80, then queuedLong from 80; waiting never starts.
      yield* group.spawn("short", succeedAfter(50, "short"))
      yield* group.spawn("long", succeedAfter(150, "long"))
      yield* group.spawn("queuedShort", succeedAfter(30, "queuedShort"))
      yield* group.spawn("queuedLong", succeedAfter(100, "queuedLong"))
      yield* group.spawn("waiting", succeedAfter(10, "waiting"))
      yield* group.close()
      const settling = yield* Effect.fork(group.waitFor("100 millis"))
      yield* TestClock.adjust(99)
      expect(yield* isDone(settling)).toBe(false)
      expect(yield* group.pending).toEqual(["long", "queuedLong", "waiting"])
      yield* TestClock.adjust(1)
      expect(yield* joinEnded(settling)).toEqual({ finished: 2, interrupted: ["long", "queuedLong", "waiting"] })
      expect(yield* group.pending).toEqual([])
      const results = yield* group.join
      expect(results.succeeded.map((result) => result.label)).toEqual(["short", "queuedShort"])
      expect(results.interrupted).toEqual([
        { label: "long", started: true },
        { label: "queuedLong", started: true },
        { label: "waiting", started: false }
      ])
    }))

  it.scoped("waitFor returns as soon as the closed group is empty, well before the deadline", () =>
    Effect.gen(function*() {
      const group = yield* TaskGroup.make<string, Boom>({ mode: "collect" })
      yield* group.spawn("a", succeedAfter(10, "a"))
      yield* group.spawn("b", failAfter(20, "b"))
      yield* group.close()
      const settling = yield* Effect.fork(group.waitFor("1 hour"))
      yield* TestClock.adjust(19)
      expect(yield* isDone(settling)).toBe(false)
      yield* TestClock.adjust(1)
      expect(yield* joinEnded(settling)).toEqual({ finished: 2, interrupted: [] })
    }))
})

describe("TaskGroup: the Scope bounds its tasks", () => {
  it.effect("closing the Scope interrupts every task, queued ones included, waits for them, and leaves no fiber alive", () =>
    Effect.gen(function*() {
      const supervisor = yield* Supervisor.track
      const cleanedUp: Array<string> = []
      const scope = yield* Scope.make()
      const group = yield* TaskGroup.make<never, never>({ mode: "collect", concurrency: 2 }).pipe(Scope.extend(scope))
      const cleanUpSlowly = (label: string) =>
        Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 20), Effect.sync(() => cleanedUp.push(label)))
      yield* Effect.forEach(["a", "b", "c"], (label) =>
        group.spawn(label, Effect.onInterrupt(Effect.never, () => cleanUpSlowly(label))).pipe(
          Effect.supervised(supervisor)
        ))
      yield* TestClock.adjust(1)
      expect((yield* supervisor.value).length).toBe(3)
      expect(yield* group.pending).toEqual(["a", "b", "c"])

      yield* Scope.close(scope, Exit.void)
      expect(yield* supervisor.value).toEqual([])
      expect(cleanedUp.sort()).toEqual(["a", "b"]) // c never got a slot, so it had nothing to clean up
      expect((yield* group.poll).interrupted).toEqual([
        { label: "a", started: true },
        { label: "b", started: true },
        { label: "c", started: false }
      ])
      const refused = yield* Effect.flip(group.spawn("late", Effect.never))
      expect(refused).toBeInstanceOf(ShuttingDown)
      yield* group.wait
    }))

  it.effect("concurrency must be a positive integer", () =>
    Effect.gen(function*() {
      for (const concurrency of [0, -1, 1.5]) {
        const exit = yield* Effect.exit(Effect.scoped(TaskGroup.make({ mode: "collect", concurrency })))
        expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit)).toBe(true)
      }
    }))
})
