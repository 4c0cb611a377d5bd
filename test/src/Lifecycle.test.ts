/**
 * Lifecycle: the phases, the intake check, tracked work, the one deadline, escalation, the report and
 * the exit codes — in virtual time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Context, Duration, Effect, Exit, Fiber, Layer, Option, Stream, TestClock } from "effect"
import { Lifecycle, Middleware, ShuttingDown, TaskGroup } from "keel"

const withLifecycle = (options: Lifecycle.Options = { drainTimeout: "10 seconds" }) =>
  Effect.provide(Lifecycle.layer(options))

// Forks the run and lets the program's own fibers start (TestClock.adjust runs them until they suspend).
const runInBackground = <A, E>(program: Effect.Effect<A, E, Lifecycle.Lifecycle>) =>
  Effect.tap(Effect.fork(Lifecycle.run(program)), () => TestClock.adjust(0))

describe("Lifecycle phases", () => {
  it.effect("moves running → draining → stopped (no pre-stop delay), observable as a value, a stream and an awaitable", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const seen = yield* lifecycle.phaseChanges.pipe(Stream.take(3), Stream.runCollect, Effect.fork)
      const draining = yield* Effect.fork(lifecycle.awaitDraining)
      yield* TestClock.adjust(0)
      expect(yield* lifecycle.phase).toBe("running")
      expect(yield* lifecycle.isReady).toBe(true)
      const running = yield* runInBackground(Effect.never)
      yield* Lifecycle.shutdown("maintenance")
      expect(yield* Fiber.join(draining)).toEqual({ _tag: "Requested", reason: "maintenance" })
      expect(yield* lifecycle.isReady).toBe(false)
      yield* Fiber.join(running)
      expect(yield* lifecycle.phase).toBe("stopped")
      expect(Chunk.toArray(yield* Fiber.join(seen))).toEqual(["running", "draining", "stopped"])
    }).pipe(withLifecycle()))

  it.effect("closes intake with a typed ShuttingDown once draining", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      yield* lifecycle.ensureAccepting
      yield* lifecycle.signal("SIGTERM")
      const refused = yield* Effect.flip(lifecycle.ensureAccepting)
      expect(refused).toEqual(new ShuttingDown({ reason: "SIGTERM" }))
      const tracked = yield* Effect.flip(lifecycle.track("late request", Effect.succeed(1)))
      expect(tracked._tag).toBe("ShuttingDown")
    }).pipe(withLifecycle()))

  it.effect("reads the drain deadline and pre-stop delay from the environment through Config", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      expect(Duration.toMillis(lifecycle.drainTimeout)).toBe(12_000)
      expect(Duration.toMillis(lifecycle.preStopDelay)).toBe(250)
    }).pipe(
      Effect.provide(Lifecycle.layer()),
      Effect.withConfigProvider(
        ConfigProvider.fromMap(new Map([["KEEL_DRAIN_TIMEOUT", "12 seconds"], ["KEEL_PRE_STOP_DELAY", "250 millis"]]))
      )
    ))

  it.effect("an explicit option wins over the environment, and a bad value is a ConfigError", () =>
    Effect.gen(function*() {
      const fromOption = yield* Effect.map(Lifecycle.Lifecycle, (lifecycle) => lifecycle.drainTimeout).pipe(
        Effect.provide(Lifecycle.layer({ drainTimeout: "3 seconds" }))
      )
      expect(Duration.toMillis(fromOption)).toBe(3_000)
      const broken = yield* Effect.flip(
        Effect.provide(Lifecycle.Lifecycle, Lifecycle.layer()).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["KEEL_DRAIN_TIMEOUT", "soon"]])))
        )
      )
      expect(broken._op).toBe("InvalidData")
    }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["KEEL_DRAIN_TIMEOUT", "12 seconds"]])))))
})

describe("Lifecycle.run", () => {
  it.effect("a program that ends by itself has no shutdown report and exit code 0 (1 on failure)", () =>
    Effect.gen(function*() {
      const done = yield* Lifecycle.run(Effect.succeed("done"))
      expect(done.exit).toEqual(Exit.succeed("done"))
      expect(Option.isNone(done.report)).toBe(true)
      expect(Lifecycle.exitCode(done)).toBe(0)
      const failed = yield* Lifecycle.run(Effect.fail("boom"))
      expect(Lifecycle.exitCode(failed)).toBe(1)
    }).pipe(withLifecycle()))

  it.effect("waits for tracked in-flight work, then reports a clean drain", () =>
    Effect.gen(function*() {
      const program = Lifecycle.track("request-1", Effect.sleep("2 seconds")).pipe(Effect.zipRight(Effect.never))
      const running = yield* runInBackground(program)
      yield* TestClock.adjust("500 millis")
      yield* Lifecycle.shutdown("deploy")
      yield* TestClock.adjust("1500 millis")
      const result = yield* Fiber.join(running)
      const report = Option.getOrThrow(result.report)
      expect(report.outcome).toBe("clean")
      expect(report.totalMs).toBe(1500)
      expect(report.components).toEqual([
        { component: "tracked", durationMs: 1500, finished: 1, forced: 0, unfinished: [] }
      ])
      expect(Lifecycle.exitCode(result)).toBe(0)
    }).pipe(withLifecycle()))

  it.effect("at the one deadline, interrupts what is left and lists it; exit code 1", () =>
    Effect.gen(function*() {
      let interrupted = false
      const slow = Lifecycle.track("slow-upload", Effect.sleep("1 minute")).pipe(
        Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
      )
      const program = Effect.zipRight(Effect.fork(slow), Effect.never)
      const running = yield* runInBackground(program)
      yield* TestClock.adjust("1 second")
      yield* Lifecycle.shutdown("deploy")
      yield* TestClock.adjust("10 seconds")
      const result = yield* Fiber.join(running)
      const report = Option.getOrThrow(result.report)
      expect(interrupted).toBe(true)
      expect(report.outcome).toBe("forced")
      // The work is cut at the deadline minus the grace kept for what it interrupts and for finalizers.
      expect(report.forcedBy).toEqual(Option.some({ _tag: "Deadline", after: Duration.seconds(8) }))
      expect(report.unfinished).toEqual(["slow-upload"])
      expect(report.totalMs).toBe(8_000)
      expect(Lifecycle.exitCode(result)).toBe(1)
      expect(Lifecycle.renderReport(report)).toContain("slow-upload")
      expect(Lifecycle.renderReport(report)).toContain("work cut after 8s of 10s")
    }).pipe(withLifecycle({ drainTimeout: "10 seconds", forceGrace: "2 seconds" })))

  it.effect("the pre-stop delay comes first, then the drain with its own deadline: at most preStopDelay + drainTimeout", () =>
    Effect.gen(function*() {
      const program = Effect.zipRight(Effect.fork(Lifecycle.track("job", Effect.sleep("1 minute"))), Effect.never)
      const running = yield* runInBackground(program)
      yield* Lifecycle.shutdown("deploy")
      yield* TestClock.adjust("1 minute")
      const report = Option.getOrThrow((yield* Fiber.join(running)).report)
      // The job is cut at 5 s − 1 s of grace into the drain and ends at once.
      expect(report.phases.map((timing) => [timing.phase, timing.durationMs])).toEqual([
        ["preStop", 3_000],
        ["inFlight", 4_000],
        ["finalizers", 0]
      ])
      expect(report.totalMs).toBe(7_000)
      expect(report.preStopDelayMs + report.drainTimeoutMs).toBe(8_000)
    }).pipe(withLifecycle({ drainTimeout: "5 seconds", preStopDelay: "3 seconds", forceGrace: "1 second" })))

  it.effect("worst case: work that ignores interruption and a finalizer that hangs still end at preStopDelay + drainTimeout", () =>
    Effect.gen(function*() {
      let reportedAt = -1
      const program = Effect.gen(function*() {
        // A finalizer that never returns, and tracked work that cannot be interrupted.
        yield* Effect.addFinalizer(() => Effect.never)
        yield* Effect.fork(Lifecycle.track("stuck", Effect.uninterruptible(Effect.never)))
        return yield* Effect.never
      }).pipe(Effect.scoped)
      const lifecycle = yield* Lifecycle.Lifecycle
      const running = yield* Effect.fork(Effect.tap(Lifecycle.run(program), () =>
        Effect.clockWith((clock) => Effect.sync(() => (reportedAt = clock.unsafeCurrentTimeMillis())))))
      yield* TestClock.adjust(0)
      const signalledAt = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      yield* lifecycle.signal("SIGTERM")
      yield* TestClock.adjust("3 minutes")
      const result = yield* Fiber.join(running)
      const report = Option.getOrThrow(result.report)
      // 5 s of pre-stop delay, then a 20 s drain (the default), whatever the work and the finalizers do.
      expect(reportedAt - signalledAt).toBe(25_000)
      expect(report.totalMs).toBe(25_000)
      expect(report.phases.map((timing) => [timing.phase, timing.durationMs])).toEqual([
        ["preStop", 5_000],
        ["inFlight", 20_000],
        ["finalizers", 0]
      ])
      expect(report.outcome).toBe("forced")
      expect(report.unfinished).toEqual(["stuck"])
      expect(report.finalizersAbandoned).toBe(true)
      expect(Lifecycle.exitCode(result)).toBe(1)
    }).pipe(withLifecycle({ preStopDelay: "5 seconds" })))

  it.effect("during the pre-stop delay readiness is false but intake is open; a second signal skips the rest of it", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const running = yield* runInBackground(Effect.never)
      expect(yield* lifecycle.signal("SIGTERM")).toBe("started")
      expect(yield* lifecycle.phase).toBe("preStop")
      expect(yield* lifecycle.isReady).toBe(false)
      expect(yield* Lifecycle.awaitShutdown).toEqual({ _tag: "Signal", signal: "SIGTERM" })
      yield* TestClock.adjust("3 seconds")
      // Everything still works: intake is open and tracked work is accepted.
      yield* lifecycle.ensureAccepting
      expect(yield* lifecycle.track("request during pre-stop", Effect.succeed(42))).toBe(42)
      expect(Option.isNone(yield* lifecycle.pollDraining)).toBe(true)
      expect(Duration.toMillis(yield* lifecycle.remaining)).toBe(Number.POSITIVE_INFINITY)
      expect(yield* lifecycle.signal("SIGTERM")).toBe("preStopSkipped")
      expect(yield* lifecycle.phase).toBe("draining")
      expect((yield* Effect.flip(lifecycle.ensureAccepting))._tag).toBe("ShuttingDown")
      const report = Option.getOrThrow((yield* Fiber.join(running)).report)
      expect(report.phases[0]).toEqual({ phase: "preStop", durationMs: 3_000 })
      expect(report.outcome).toBe("clean")
    }).pipe(withLifecycle({ drainTimeout: "10 seconds", preStopDelay: "30 seconds" })))

  it.effect("signals step the shutdown on: start, skip the pre-stop delay, escalate, then ignored", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const running = yield* runInBackground(Effect.zipRight(Effect.fork(Lifecycle.track("job", Effect.never)), Effect.never))
      const effects = [
        yield* lifecycle.signal("SIGTERM"),
        yield* lifecycle.signal("SIGTERM"),
        yield* lifecycle.signal("SIGINT"),
        yield* lifecycle.signal("SIGINT")
      ]
      expect(effects).toEqual(["started", "preStopSkipped", "escalated", "ignored"])
      const result = yield* Fiber.join(running)
      expect(Option.getOrThrow(result.report).outcome).toBe("escalated")
      expect(Lifecycle.exitCode(result)).toBe(130)
    }).pipe(withLifecycle({ drainTimeout: "10 seconds", preStopDelay: "5 seconds" })))

  it("the defaults fit Kubernetes' default terminationGracePeriodSeconds of 30 with margin", () =>
    Effect.runPromise(Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const worstCaseMs = Duration.toMillis(lifecycle.preStopDelay) + Duration.toMillis(lifecycle.drainTimeout)
      expect(worstCaseMs).toBe(20_000)
      expect(worstCaseMs).toBeLessThanOrEqual(30_000 - 5_000)
    }).pipe(Effect.provide(Lifecycle.layer()), Effect.scoped)))

  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    it.effect(`a second ${signal} stops waiting at once, finalizers still run, exit code ${code}`, () =>
      Effect.gen(function*() {
        let finalized = false
        const program = Effect.gen(function*() {
          yield* Effect.addFinalizer(() => Effect.sync(() => (finalized = true)))
          yield* Effect.fork(Lifecycle.track("long job", Effect.sleep("1 hour")))
          return yield* Effect.never
        }).pipe(Effect.scoped)
        const lifecycle = yield* Lifecycle.Lifecycle
        const running = yield* runInBackground(program)
        yield* lifecycle.signal(signal)
        yield* TestClock.adjust("2 seconds")
        yield* lifecycle.signal(signal)
        const result = yield* Fiber.join(running)
        const report = Option.getOrThrow(result.report)
        expect(finalized).toBe(true)
        expect(report.outcome).toBe("escalated")
        expect(report.totalMs).toBe(2_000)
        expect(report.unfinished).toEqual(["long job"])
        expect(Lifecycle.exitCode(result)).toBe(code)
      }).pipe(withLifecycle({ drainTimeout: "30 seconds" })))
  }

  it.effect("after a programmatic shutdown, the first signal only confirms it; the second escalates", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const program = Effect.zipRight(Effect.fork(Lifecycle.track("long job", Effect.sleep("1 hour"))), Effect.never)
      const running = yield* runInBackground(program)
      yield* Lifecycle.shutdown("deploy")
      yield* lifecycle.signal("SIGTERM")
      yield* TestClock.adjust("1 second")
      expect(Option.isNone(yield* lifecycle.pollForced)).toBe(true)
      yield* lifecycle.signal("SIGTERM")
      const result = yield* Fiber.join(running)
      expect(Option.getOrThrow(result.report).outcome).toBe("escalated")
      expect(Lifecycle.exitCode(result)).toBe(143)
    }).pipe(withLifecycle({ drainTimeout: "30 seconds" })))

  it.effect("work tracked in an uninterruptible region cannot hold the drain past the deadline", () =>
    Effect.gen(function*() {
      const stuck = Lifecycle.track("stuck", Effect.uninterruptible(Effect.sleep("1 minute")))
      const running = yield* runInBackground(Effect.zipRight(Effect.fork(stuck), Effect.never))
      yield* Lifecycle.shutdown("deploy")
      yield* TestClock.adjust("14 seconds")
      const report = Option.getOrThrow((yield* Fiber.join(running)).report)
      expect(report.outcome).toBe("forced")
      expect(report.unfinished).toEqual(["stuck"])
      // The work is cut at 8 s and gets the 2 s of grace; the program's interruption, still waiting on the
      // stuck work, has no time left and is abandoned at the 10 s deadline.
      expect(report.phases.map((timing) => [timing.phase, timing.durationMs])).toEqual([
        ["inFlight", 10_000],
        ["finalizers", 0]
      ])
      expect(report.totalMs).toBe(10_000)
      expect(report.finalizersAbandoned).toBe(true)
      yield* TestClock.adjust("1 minute") // lets the stuck work end, so nothing outlives the test
    }).pipe(withLifecycle({ drainTimeout: "10 seconds", forceGrace: "2 seconds" })))

  it.effect("when finalizers are abandoned, the report lists the fibers still alive, what they wait on, and held permits", () =>
    Effect.gen(function*() {
      const limit = yield* Middleware.concurrencyLimit({ max: 4, name: "leftover-test" })
      const upload = limit((_: void) => Effect.uninterruptible(Effect.sleep("1 minute")))
      // The group's Scope (the program's) waits for the stuck task when it closes.
      const program = Effect.gen(function*() {
        const group = yield* TaskGroup.make({ mode: "collect", name: "uploads" })
        yield* group.spawn("stuck-upload", upload(undefined))
        return yield* Effect.never
      }).pipe(Effect.scoped)
      const running = yield* runInBackground(program)
      yield* Lifecycle.shutdown("deploy")
      yield* TestClock.adjust("14 seconds")
      const report = Option.getOrThrow((yield* Fiber.join(running)).report)
      expect(report.finalizersAbandoned).toBe(true)
      const leftovers = Option.getOrThrow(report.leftovers)
      const stuckFiber = leftovers.fibers.find((fiber) => /^(group=uploads task=stuck-upload|task=stuck-upload group=uploads)$/.test(fiber.name))
      expect(stuckFiber).toBeDefined()
      const programFiber = leftovers.fibers.find((fiber) => fiber.name === "program")
      expect(programFiber).toBeDefined()
      // The program is waiting (through its finalizer) on the stuck fiber.
      const waitsOnStuck = leftovers.fibers.filter((fiber) => fiber.waitingOn.includes(stuckFiber!.id))
      expect(waitsOnStuck.length).toBeGreaterThan(0)
      expect(leftovers.held).toContainEqual({ what: `1 permit of concurrency limit "leftover-test"`, count: 1 })
      expect(leftovers.held).toContainEqual({ what: `1 task not ended in task group "uploads"`, count: 1 })
      const rendered = Lifecycle.renderReport(report)
      expect(rendered).toContain(`#${stuckFiber!.id} ${stuckFiber!.name} (alive `)
      expect(rendered).toContain(`still held: 1 permit of concurrency limit "leftover-test"`)
      yield* TestClock.adjust("1 minute")
    }).pipe(Effect.scoped, withLifecycle({ drainTimeout: "10 seconds", forceGrace: "2 seconds" })))

  it.effect("a clean drain has no leftovers section", () =>
    Effect.gen(function*() {
      const running = yield* runInBackground(Effect.never)
      yield* Lifecycle.shutdown("deploy")
      const report = Option.getOrThrow((yield* Fiber.join(running)).report)
      expect(report.outcome).toBe("clean")
      expect(report.leftovers).toEqual(Option.none())
      expect(Lifecycle.renderReport(report)).not.toContain("still alive")
    }).pipe(withLifecycle({ drainTimeout: "10 seconds" })))

  it.effect("Layer finalizers run after draining starts, in reverse dependency order", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      class Database extends Context.Tag("Database")<Database, string>() {}
      class Api extends Context.Tag("Api")<Api, string>() {}
      const database = Layer.scoped(
        Database,
        Effect.acquireRelease(Effect.succeed("db"), () => Effect.sync(() => released.push("database")))
      )
      const api = Layer.scoped(
        Api,
        Effect.acquireRelease(
          Effect.map(Database, (db) => `api over ${db}`),
          () => Effect.sync(() => released.push("api"))
        )
      ).pipe(Layer.provide(database))
      const program = Effect.zipRight(Api, Effect.never).pipe(Effect.provide(api))
      const running = yield* runInBackground(program)
      expect(released).toEqual([])
      yield* Lifecycle.shutdown("deploy")
      const result = yield* Fiber.join(running)
      expect(released).toEqual(["api", "database"])
      expect(Lifecycle.exitCode(result)).toBe(0)
    }).pipe(withLifecycle()))

  it.effect("a program that fails with ShuttingDown while draining still exits 0", () =>
    Effect.gen(function*() {
      const program = Effect.zipRight(Lifecycle.awaitDraining, Lifecycle.track("late", Effect.void))
      const running = yield* runInBackground(program)
      yield* Lifecycle.shutdown("deploy")
      const result = yield* Fiber.join(running)
      expect(Exit.isFailure(result.exit)).toBe(true)
      expect(Lifecycle.exitCode(result)).toBe(0)
    }).pipe(withLifecycle()))
})
