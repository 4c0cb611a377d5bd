/**
 * `npm run bench`: the benchmarks in sequence, each in a fresh Node process (so heaps, JIT state and
 * resident memory do not carry over from one to the next), then one summary table. Figures are printed, never
 * enforced: the run exits 0 unless a benchmark crashed.
 */
import { benchPath, printTable, runChild, section } from "./lib.js"
import type { Row } from "./lib.js"

const benchmarks = [
  { file: "throughput.ts", nodeFlags: ["--expose-gc"] },
  { file: "memory.ts", nodeFlags: ["--expose-gc"] },
  { file: "shutdown-latency.ts", nodeFlags: [] },
  { file: "middleware.ts", nodeFlags: ["--expose-gc"] },
  { file: "http.ts", nodeFlags: [] },
  { file: "mini-redis.ts", nodeFlags: [] },
  { file: "jobqueue.ts", nodeFlags: [] },
  { file: "simulation.ts", nodeFlags: [] },
  { file: "startup.ts", nodeFlags: [] }
]

const startedAt = performance.now()
const rows: Array<Row> = []
const crashed: Array<string> = []
for (const { file, nodeFlags } of benchmarks) {
  const { rows: received, code } = await runChild(benchPath(file), nodeFlags)
  rows.push(...received)
  if (code !== 0) crashed.push(`${file} (exit code ${code})`)
}

section(`summary (${((performance.now() - startedAt) / 1000).toFixed(0)} s)`)
printTable(rows)
if (crashed.length > 0) {
  console.log(`\ncrashed: ${crashed.join(", ")}`)
  process.exitCode = 1
}
