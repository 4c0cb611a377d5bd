/**
 * runMain as a process: it stays up while the program only waits, and a signal ends it through the drain.
 */
import { afterEach, expect, it } from "vitest"
import { killLeftovers, startTypeScript } from "../../support/childProcess.js"

afterEach(killLeftovers)

it("keeps a program that only awaits the drain alive until SIGTERM, then exits 0", async () => {
  const run = startTypeScript("test/layers/node/fixtures/awaits-draining.ts", [])
  await run.waitForOutput(/ready/, 30_000)
  const exitedEarly = await Promise.race([run.exited.then(() => true), new Promise((resolve) => setTimeout(resolve, 1_000, false))])
  expect(exitedEarly, run.output()).toBe(false)
  run.signal("SIGTERM")
  expect(await run.waitForExit(15_000)).toEqual({ code: 0, signal: null })
  expect(run.output()).toMatch(/shutdown clean: trigger SIGTERM/)
})
