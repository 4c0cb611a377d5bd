/**
 * The hedge middleware, case by case: when hedged attempts start, who wins, what becomes of the losers and
 * of failed attempts, how the percentile delay learns from recent latencies, the caller's deadline, and that
 * interrupting a call at any point leaves no attempt running.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Duration, Effect, Exit, Fiber, Metric, Option, TestClock } from "effect"
import { Middleware, Unavailable } from "keel"

const { hedge, hedgeMetrics, within } = Middleware

interface Plan {
  readonly latency: number
  readonly outcome: "succeed" | "fail" | "die"
}

const ok = (latency: number): Plan => ({ latency, outcome: "succeed" })
const fails = (latency: number): Plan => ({ latency, outcome: "fail" })

interface AttemptRecord {
  readonly startedAt: number
  end?: "succeeded" | "failed" | "died" | "interrupted"
}

/**
 * Attempt n (0-based) follows `plans[n]` (the last plan repeats). `log` orders interruptions and call
 * returns, to check that a loser's finalizer ran before its call returned.
 */
const planned = (plans: ReadonlyArray<Plan>) => {
  const attempts: Array<AttemptRecord> = []
  const log: Array<string> = []
  const service = (request: string) =>
    Effect.gen(function*() {
      const index = attempts.length
      const plan = plans[Math.min(index, plans.length - 1)]!
      const record: AttemptRecord = { startedAt: yield* Clock.currentTimeMillis }
      attempts.push(record)
      yield* Effect.sleep(Duration.millis(plan.latency)).pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            record.end = "interrupted"
            log.push(`attempt ${index} interrupted`)
          })
        )
      )
      if (plan.outcome === "fail") {
        record.end = "failed"
        return yield* Effect.fail(new Unavailable({ reason: `attempt ${index}` }))
      }
      if (plan.outcome === "die") {
        record.end = "died"
        return yield* Effect.die(`attempt ${index} died`)
      }
      record.end = "succeeded"
      return `${request} by attempt ${index}`
    })
  const running = () => attempts.filter((attempt) => attempt.end === undefined).length
  return { attempts, log, running, service }
}

/** Runs `effect` in a fiber for `advance` of virtual time; it must have ended by then. */
const runTimed = <A, E>(effect: Effect.Effect<A, E>, log: Array<string> = [], advance: Duration.DurationInput = "1 hour") =>
  Effect.gen(function*() {
    let endedAt = Number.NaN
    const fiber = yield* Effect.fork(
      Effect.ensuring(
        effect,
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            endedAt = now
            log.push("call returned")
          }))
      )
    )
    yield* TestClock.adjust(advance)
    const polled = yield* Fiber.poll(fiber)
    if (Option.isNone(polled)) {
      yield* Fiber.interrupt(fiber)
      return expect.fail("the call should have ended by now")
    }
    return { exit: polled.value, endedAt }
  })

const counted = (counter: Metric.Metric.Counter<number>) => Effect.map(Metric.value(counter), (state) => state.count)

describe("hedge: fixed delay", () => {
  it.scoped("a call that answers before `after` is never hedged", () =>
    Effect.gen(function*() {
      const name = "hedge-test-fast"
      const { attempts, service } = planned([ok(50)])
      const layer = yield* hedge({ after: "100 millis", name })
      const { endedAt, exit } = yield* runTimed(layer(service)("job"))
      expect(exit).toEqual(Exit.succeed("job by attempt 0"))
      expect(endedAt).toBe(50)
      expect(attempts).toHaveLength(1)
      expect(yield* counted(hedgeMetrics(name).hedges)).toBe(0)
    }))

  it.scoped("a slow call is hedged at `after`; the first success wins and the loser is interrupted before the call returns", () =>
    Effect.gen(function*() {
      const name = "hedge-test-slow"
      const { attempts, log, service } = planned([ok(300), ok(50)])
      const layer = yield* hedge({ after: "100 millis", name })
      const { endedAt, exit } = yield* runTimed(layer(service)("job"), log)
      expect(exit).toEqual(Exit.succeed("job by attempt 1"))
      expect(endedAt).toBe(150)
      expect(attempts).toEqual([{ startedAt: 0, end: "interrupted" }, { startedAt: 100, end: "succeeded" }])
      expect(log).toEqual(["attempt 0 interrupted", "call returned"])
      expect(yield* counted(hedgeMetrics(name).hedges)).toBe(1)
      expect(yield* counted(hedgeMetrics(name).wins)).toBe(1)
    }))

  it.scoped("attempt k+1 starts k·after into the call, up to maxAttempts in all", () =>
    Effect.gen(function*() {
      const { attempts, log, service } = planned([ok(1_000)])
      const layer = yield* hedge({ after: "100 millis", maxAttempts: 3 })
      const { endedAt, exit } = yield* runTimed(layer(service)("job"), log)
      expect(exit).toEqual(Exit.succeed("job by attempt 0"))
      expect(endedAt).toBe(1_000)
      expect(attempts).toEqual([
        { startedAt: 0, end: "succeeded" },
        { startedAt: 100, end: "interrupted" },
        { startedAt: 200, end: "interrupted" }
      ])
      expect(log.at(-1)).toBe("call returned")
    }))

  it.scoped("maxAttempts 1 never hedges", () =>
    Effect.gen(function*() {
      const { attempts, service } = planned([ok(1_000)])
      const layer = yield* hedge({ after: "100 millis", maxAttempts: 1 })
      yield* runTimed(layer(service)("job"))
      expect(attempts).toHaveLength(1)
    }))
})

describe("hedge: failed attempts", () => {
  it.scoped("a first attempt failing before `after` fails the call at once: hedging does not retry", () =>
    Effect.gen(function*() {
      const { attempts, service } = planned([fails(50)])
      const layer = yield* hedge({ after: "100 millis", maxAttempts: 3 })
      const { endedAt, exit } = yield* runTimed(layer(service)("job"))
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 0" })))
      expect(endedAt).toBe(50)
      expect(attempts).toHaveLength(1)
    }))

  it.scoped("a failed or dead hedge does not end the call while another attempt runs", () =>
    Effect.gen(function*() {
      const failed = planned([ok(300), fails(50)])
      const layer = yield* hedge({ after: "100 millis" })
      const afterFailure = yield* runTimed(layer(failed.service)("job"))
      expect(afterFailure.exit).toEqual(Exit.succeed("job by attempt 0"))
      expect(afterFailure.endedAt).toBe(300)

      const died = planned([ok(300), { latency: 50, outcome: "die" }])
      const afterDefect = yield* runTimed(layer(died.service)("job"))
      expect(afterDefect.exit).toEqual(Exit.succeed("job by attempt 0"))
    }))

  it.scoped("hedges go on starting while one attempt still runs, and the call fails with the last failure once all have failed", () =>
    Effect.gen(function*() {
      const { attempts, service } = planned([fails(150), fails(400), fails(250)])
      const layer = yield* hedge({ after: "100 millis", maxAttempts: 3 })
      const { endedAt, exit } = yield* runTimed(layer(service)("job"))
      // Attempt 0 fails at 150 while attempt 1 runs, so attempt 2 still starts at 200; they fail at 450 and 500.
      expect(attempts.map((attempt) => attempt.startedAt)).toEqual([0, 100, 200])
      expect(endedAt).toBe(500)
      expect(exit).toEqual(Exit.fail(new Unavailable({ reason: "attempt 1" })))
    }))
})

describe("hedge: percentile delay", () => {
  it.scoped("no hedge until minSamples latencies are known; then the delay is their percentile", () =>
    Effect.gen(function*() {
      const name = "hedge-test-percentile"
      const layer = yield* hedge({ after: { percentile: 0.5, minSamples: 4, window: 4 }, name })
      for (const latency of [40, 10, 30, 20]) {
        const { attempts, service } = planned([ok(latency), ok(1)])
        yield* runTimed(layer(service)("warm-up"))
        expect(attempts, `warming up with ${latency} ms`).toHaveLength(1)
      }
      // Nearest rank: the 2nd of [10, 20, 30, 40].
      expect((yield* Metric.value(hedgeMetrics(name).delay)).value).toBe(20)
      const { attempts, service } = planned([ok(1_000), ok(1_000)])
      yield* runTimed(layer(service)("slow"))
      expect(attempts.map((attempt) => attempt.startedAt - attempts[0]!.startedAt)).toEqual([0, 20])
    }))

  it.scoped("a first attempt that lost to a hedge counts with the time it had run, not the hedge's latency", () =>
    Effect.gen(function*() {
      const layer = yield* hedge({ after: { percentile: 0.5, minSamples: 4, window: 4 } })
      for (const latency of [10, 20, 30, 40]) yield* runTimed(layer(planned([ok(latency)]).service)("warm-up"))
      // Hedged at 20, answered by the hedge at 25: the first attempt's 25 ms replace the oldest value (10).
      yield* runTimed(layer(planned([ok(100), ok(5)]).service)("hedged"))
      // [20, 25, 30, 40]: the median by nearest rank is 25.
      const { attempts, service } = planned([ok(1_000)])
      yield* runTimed(layer(service)("slow"))
      expect(attempts.map((attempt) => attempt.startedAt - attempts[0]!.startedAt)).toEqual([0, 25])
    }))

  it.scoped("the window keeps only the latest latencies", () =>
    Effect.gen(function*() {
      const layer = yield* hedge({ after: { percentile: 1, minSamples: 2, window: 2 } })
      for (const latency of [500, 10, 20]) yield* runTimed(layer(planned([ok(latency)]).service)("warm-up"))
      // 500 has left the window: the maximum of [10, 20] is 20.
      const { attempts, service } = planned([ok(1_000)])
      yield* runTimed(layer(service)("slow"))
      expect(attempts.map((attempt) => attempt.startedAt - attempts[0]!.startedAt)).toEqual([0, 20])
    }))

  it.scoped("with a fallback, calls are hedged after it until minSamples latencies are known", () =>
    Effect.gen(function*() {
      const layer = yield* hedge({ after: { percentile: 0.9, minSamples: 10, fallback: "300 millis" } })
      const { attempts, service } = planned([ok(1_000)])
      yield* runTimed(layer(service)("cold"))
      expect(attempts.map((attempt) => attempt.startedAt)).toEqual([0, 300])
    }))
})

describe("hedge: deadline, interruption and options", () => {
  it.scoped("no hedge starts once the caller's deadline has passed", () =>
    Effect.gen(function*() {
      const { attempts, service } = planned([ok(1_000)])
      const layer = yield* hedge({ after: "100 millis", maxAttempts: 3 })
      // `within` only sets the deadline, it does not enforce it: the first attempt runs to its end.
      const { exit } = yield* runTimed(within("200 millis")(layer(service)("job")))
      expect(attempts.map((attempt) => attempt.startedAt)).toEqual([0, 100])
      expect(exit).toEqual(Exit.succeed("job by attempt 0"))
    }))

  it.effect("interrupting a call at any point leaves no attempt running and starts no more", () =>
    Effect.gen(function*() {
      // Attempts start at 0, 100 and 200 and would answer at 300, 400 and 500.
      for (let steps = 0; steps <= 14; steps++) {
        yield* Effect.scoped(Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const { attempts, running, service } = planned([ok(300)])
          const layer = yield* hedge({ after: "100 millis", maxAttempts: 3 })
          const fiber = yield* Effect.fork(layer(service)("job"))
          for (let step = 0; step < steps; step++) yield* TestClock.adjust("25 millis")
          yield* Effect.yieldNow()
          yield* Fiber.interrupt(fiber)
          expect(running(), `after ${steps} steps`).toBe(0)
          const started = attempts.length
          yield* TestClock.adjust("1 second")
          expect(attempts, `after ${steps} steps`).toHaveLength(started)
        }))
      }
    }))

  it.scoped("invalid options are defects naming the option", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<Parameters<typeof hedge>[0]> = [
        { after: "100 millis", maxAttempts: 0 },
        { after: "100 millis", maxAttempts: 1.5 },
        { after: "soon" as Duration.DurationInput },
        { after: Duration.infinity },
        { after: { percentile: 1.5 } },
        { after: { percentile: Number.NaN } },
        { after: { percentile: 0.9, window: 0 } },
        { after: { percentile: 0.9, window: 10, minSamples: 11 } },
        { after: { percentile: 0.9, fallback: "later" as Duration.DurationInput } }
      ]
      for (const options of cases) {
        const exit = yield* Effect.exit(hedge(options))
        const defect = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.dieOption(exit.cause)) : undefined
        expect(defect, JSON.stringify(options)).toBeInstanceOf(Cause.IllegalArgumentException)
        expect((defect as Error).message).toMatch(/^Middleware\.hedge: (maxAttempts|after)/)
      }
    }))
})
