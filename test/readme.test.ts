/**
 * Every TypeScript snippet in the README runs, as a user would run it: against the packed package installed
 * in a project outside the repository (`packedKeel`), through tsx, as a real process that must exit 0 and
 * print what the snippet's comments promise. Snippets are matched to their promises by the marker before
 * each block; the consumer test also type-checks them under `--strict`.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { killLeftovers, type RunningProcess, startTypeScriptIn } from "./support/childProcess.js"
import { packedKeel } from "./support/packedKeel.js"
import { readmeSnippets } from "./support/readmeSnippets.js"
import { freePort } from "./support/redisServer.js"

interface Expectation {
  /** What the output must match. */
  readonly prints: RegExp
  /** For a snippet that serves until it is stopped: what the test does while it runs. */
  readonly drive?: (run: RunningProcess, port: number) => Promise<void>
}

const promised: Record<string, Expectation> = {
  "quick-start": {
    prints: /shipped order-1[\s\S]*shutdown clean: trigger SIGTERM, 1 finished, 0 forced/,
    drive: async (run, port) => {
      await run.waitForOutput(/listening on port/, 20_000)
      const response = await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: "order-1" })
      expect([response.status, await response.text()]).toEqual([202, "accepted worker-pool-1\n"])
      run.signal("SIGTERM")
    }
  },
  "lifecycle": { prints: /shutdown clean: trigger shutdown requested: demo over, 1 finished, 0 forced/ },
  "worker-pool": { prints: /1000 completed, 0 failed, queue never above 100/ },
  "hand-back": { prints: /d refused: queue full \(capacity 2\)[\s\S]*handed back: b, c/ },
  "backoff": { prints: /delays: [\s\S]*ok after 3 calls/ },
  "task-group": { prints: /3 fetched; failed: fetch broken \(invalid: 404 for broken\)[\s\S]*cut at the deadline: slow/ },
  "errors": { prints: /task diagnostics failed: GPU diagnostic failed: IPMI command failed: timeout/ },
  "middleware": { prints: /item 1, item 2, item 3 after 6 calls; breaker Closed/ },
  "http-server": { prints: /statuses 200 400 413[\s\S]*shutdown clean: trigger shutdown requested: demo over/ },
  "job-queue": { prints: /deliveries 1 then 2; ready 0, leased 0, delayed 0, dead 0/ },
  "consume": { prints: /3 mailed, each delivered once; queue ready 0, leased 0/ },
  "tracing": { prints: /welcome mail to ada@example\.com[\s\S]*POST \/signup and process mailer in one trace/ },
  "simulation": {
    prints: /overbooked: completed after \d+ steps[^\n]*replay with keel-sim-1:\S+[\s\S]*shrunk to the decisions \[[\d, ]+\][\s\S]*replayed: the same path[\s\S]*fixed: never overbooked in 500 schedules/
  },
  "property-test": {
    prints:
      /bug found, shrunk to: call 0 fails with error 0\n.*LedgerViolation: ledger violated: 1 settled more than once \(p1 ×2\)\nfixed: 100 scenarios, every payment has exactly one outcome/
  }
}

const snippets = readmeSnippets()
let directory: string

let directoryWithOptionalPeers: string

beforeAll(async () => {
  const { project, typesProject } = await packedKeel()
  directory = join(project, `readme-${process.pid}`)
  directoryWithOptionalPeers = join(typesProject, `readme-${process.pid}`)
  mkdirSync(directory, { recursive: true })
  mkdirSync(directoryWithOptionalPeers, { recursive: true })
}, 300_000)

/** A snippet that imports an entry point with optional peers runs where a user installed them too. */
const needsOptionalPeers = (source: string) => /from "keel\/(otel|redis)"/.test(source)

afterEach(killLeftovers)

describe("README snippets, against the packed package", () => {
  it("every snippet has a promise and every promise a snippet", () => {
    expect(snippets.map((snippet) => snippet.name).sort()).toEqual(Object.keys(promised).sort())
  })

  it.each(snippets)("$name runs, exits 0 and prints what it says", async ({ name, source }) => {
    const { prints, drive } = promised[name]!
    const home = needsOptionalPeers(source) ? directoryWithOptionalPeers : directory
    const file = join(home, `${name}.ts`)
    writeFileSync(file, source)
    const port = await freePort()
    const run = startTypeScriptIn(home, file, { PORT: String(port) })
    if (drive !== undefined) await drive(run, port)
    const exited = await run.waitForExit(30_000)
    expect(exited, run.output()).toEqual({ code: 0, signal: null })
    expect(run.output()).toMatch(prints)
  })
})
