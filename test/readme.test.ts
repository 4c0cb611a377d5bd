/**
 * Every TypeScript snippet in the README runs: each ```ts block is written to a file inside the package
 * (so `import … from "keel"` resolves as it does for users) and executed as a real process, which must
 * exit 0 and print what the snippet's comments promise.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { killLeftovers, repositoryRoot, startTypeScript } from "./support/childProcess.js"

const readme = readFileSync(join(repositoryRoot, "README.md"), "utf8")
const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!)
const directory = join(repositoryRoot, ".snippets")

// What each snippet's own comments say it prints, in order of appearance.
const promised: ReadonlyArray<RegExp> = [
  /shutdown clean: trigger shutdown requested: demo over, 1 finished, 0 forced/,
  /1000 completed, 0 failed, queue never above 100/,
  /d refused: queue full \(capacity 2\)[\s\S]*handed back: b, c/,
  /delays: [\s\S]*ok after 3 calls/,
  /3 fetched; failed: fetch broken \(invalid: 404 for broken\)[\s\S]*cut at the deadline: slow/,
  /task diagnostics failed: GPU diagnostic failed: IPMI command failed: timeout/,
  /item 1, item 2, item 3 after 6 calls; breaker Closed/,
  /statuses 200 400 413[\s\S]*shutdown clean: trigger shutdown requested: demo over/,
  /attempts 1 then 2; ready 0, leased 0, delayed 0, dead 0/,
  /3 mailed, each delivered once; queue ready 0, leased 0/,
  /bug found, shrunk to: call 0 fails with error 0\n.*LedgerViolation: ledger violated: 1 settled more than once \(p1 ×2\)\nfixed: 100 scenarios, every payment has exactly one outcome/
]

afterEach(killLeftovers)

describe("README snippets", () => {
  it("has one promise per snippet", () => {
    expect(snippets.length).toBe(promised.length)
  })

  snippets.forEach((source, index) => {
    it(`snippet ${index + 1} runs and exits 0`, async () => {
      mkdirSync(directory, { recursive: true })
      const file = join(directory, `readme-${index + 1}.ts`)
      writeFileSync(file, source)
      const run = startTypeScript(file, [])
      const exited = await run.waitForExit(30_000)
      expect(exited, run.output()).toEqual({ code: 0, signal: null })
      expect(run.output()).toMatch(promised[index]!)
    })
  })
})
