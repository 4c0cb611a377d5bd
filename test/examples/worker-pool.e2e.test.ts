/**
 * The worker-pool example as a user runs it: a real process, real SIGINT / SIGTERM, the exit code and
 * the printed shutdown report checked from the outside.
 */
import { afterEach, describe, expect, it } from "vitest"
import { killLeftovers, startTypeScript } from "../support/childProcess.js"

const entry = "examples/worker-pool/main.ts"
const busy = /progress: queued \d+ \| in flight 4 \|/

afterEach(killLeftovers)

describe("worker-pool example", () => {
  it("runs its jobs to the end and exits 0", async () => {
    const run = startTypeScript(entry, ["--jobs", "30", "--min-ms", "5", "--max-ms", "20", "--failure-rate", "0"])
    expect(await run.waitForExit(30_000)).toEqual({ code: 0, signal: null })
    expect(run.output()).toContain("all 30 jobs done: 30 completed, 0 failed")
  })

  it("on SIGINT lets the in-flight jobs finish, prints the report and exits 0", async () => {
    const run = startTypeScript(entry, [
      "--jobs", "0", "--workers", "4", "--min-ms", "600", "--max-ms", "900", "--failure-rate", "0", "--policy", "handBack"
    ])
    await run.waitForOutput(busy, 30_000)
    run.signal("SIGINT")
    expect(await run.waitForExit(30_000)).toEqual({ code: 0, signal: null })
    const report = run.output().match(/shutdown clean: trigger SIGINT, (\d+) finished, (\d+) forced, (\d+) unfinished/)
    expect(report).not.toBeNull()
    const [, finished, forced, unfinished] = report!.map(Number)
    expect(finished).toBe(4) // the four running jobs completed
    expect(forced).toBe(0)
    expect(unfinished).toBeGreaterThanOrEqual(32) // the full queue was handed back, listed by id
    expect(run.output()).toMatch(/handed back unfinished: jobs-\d+ \(handedBack\)/)
  })

  it("with KEEL_PRE_STOP_DELAY, jobs keep being produced and run through the delay, then the drain", async () => {
    const run = startTypeScript(entry, ["--jobs", "0", "--min-ms", "20", "--max-ms", "40", "--failure-rate", "0"], {
      KEEL_PRE_STOP_DELAY: "1500 millis"
    })
    await run.waitForOutput(busy, 30_000)
    run.signal("SIGINT")
    const signalledAt = run.output().length
    await run.waitForOutput(/shutting down \(SIGINT\): not ready; serving on for the pre-stop delay of 1s 500ms/, 10_000)
    const drainingAt = (await run.waitForOutput(/draining \(SIGINT\): intake closed/, 10_000)).index!
    const doneIn = (text: string) =>
      [...text.matchAll(/progress: queued \d+ \| in flight \d+ \| done (\d+)/g)].map((match) => Number(match[1]))
    // The progress lines printed during the delay show jobs still completing at the usual pace (~100/s).
    const doneBefore = doneIn(run.output().slice(0, signalledAt)).at(-1) ?? 0
    const doneDuring = doneIn(run.output().slice(signalledAt, drainingAt))
    expect(doneDuring.length).toBeGreaterThanOrEqual(1)
    expect(Math.max(...doneDuring) - doneBefore).toBeGreaterThan(20)
    expect(await run.waitForExit(30_000)).toEqual({ code: 0, signal: null })
    expect(run.output()).toMatch(/shutdown clean: trigger SIGINT.*phases: preStop 1\d\d\d ms/)
  })

  it("a second SIGINT during the drain stops waiting and exits 130", async () => {
    const run = startTypeScript(entry, ["--jobs", "0", "--min-ms", "20000", "--max-ms", "30000", "--failure-rate", "0"])
    await run.waitForOutput(busy, 30_000)
    run.signal("SIGINT")
    await run.waitForOutput(/draining \(SIGINT\)/, 10_000)
    run.signal("SIGINT")
    expect(await run.waitForExit(15_000)).toEqual({ code: 130, signal: null })
    // Nothing finished: the jobs had 20 s or more to go, so the exit did not wait for them.
    expect(run.output()).toMatch(/shutdown escalated \(second SIGINT\): trigger SIGINT, 0 finished, \d+ forced/)
  })

  it("a second SIGTERM exits 143", async () => {
    const run = startTypeScript(entry, ["--jobs", "0", "--min-ms", "20000", "--max-ms", "30000"])
    await run.waitForOutput(busy, 30_000)
    run.signal("SIGTERM")
    await run.waitForOutput(/draining \(SIGTERM\)/, 10_000)
    run.signal("SIGTERM")
    expect(await run.waitForExit(15_000)).toEqual({ code: 143, signal: null })
  })

  it("when the drain deadline passes, the running jobs are cut and listed, exit 1", async () => {
    const run = startTypeScript(entry, ["--jobs", "0", "--min-ms", "20000", "--max-ms", "30000"], {
      KEEL_DRAIN_TIMEOUT: "1 second"
    })
    await run.waitForOutput(busy, 30_000)
    run.signal("SIGTERM")
    expect(await run.waitForExit(15_000)).toEqual({ code: 1, signal: null })
    expect(run.output()).toMatch(/shutdown forced \(deadline reached: work cut after 500ms of 1s\): trigger SIGTERM, 0 finished, \d+ forced/)
    expect(run.output()).toMatch(/jobs-1 \(interrupted\)/)
  })

  it("a job stuck past interruption: the report says what is still alive and waiting on it, exit 1", async () => {
    const run = startTypeScript(
      entry,
      ["--jobs", "0", "--workers", "2", "--min-ms", "100", "--max-ms", "200", "--failure-rate", "0", "--hang-job", "1"],
      { KEEL_DRAIN_TIMEOUT: "1 second" }
    )
    await run.waitForOutput(/progress: queued \d+ \| in flight 2 \| done [1-9]/, 30_000)
    run.signal("SIGTERM")
    // The work is cut half way through the 1 s deadline; at the deadline the run gives up on the stuck job.
    expect(await run.waitForExit(30_000)).toEqual({ code: 1, signal: null })
    const output = run.output()
    expect(output).toContain("finalizers were still running at the deadline and were abandoned")
    const worker = output.match(/#(\d+) worker=\d+ pool=jobs \(alive \d+ ms\)/)
    expect(worker).not.toBeNull()
    expect(output).toMatch(new RegExp(`#\\d+ program \\(alive \\d+ ms, waiting on #\\d+\\)`))
    expect(output).toMatch(new RegExp(`waiting on #${worker![1]}\\)`))
    expect(output).toContain(`still held: 1 job running in worker pool \\"jobs\\"`)
  })

  it("refuses a bad flag with a clear message and exit code 2", async () => {
    const run = startTypeScript(entry, ["--workers", "zero"])
    expect(await run.waitForExit(30_000)).toEqual({ code: 2, signal: null })
    expect(run.output()).toContain(`--workers must be an integer ≥ 1, got "zero"`)
  })
})
