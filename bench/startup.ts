/**
 * Start-up and footprint as a deployment sees them: how long from `exec` until the job server answers
 * `GET /healthz` (what a rolling restart waits for), and how much memory it holds once idle. The job server
 * runs from the built JavaScript with plain `node`, as a user deploys it, beside the same server under `tsx`
 * (how the repository runs it) and beside the alternative a user would write instead, Fastify + p-queue with
 * the same routes (bench/fixtures/fastify-jobs.ts), compiled and run the same way. Both are also measured
 * bundled into one file by esbuild, the other common way to deploy a Node service.
 *
 * Both apps are compiled with `tsc` into bench/.build (inside the package, so that `import … from "keel"`
 * resolves to the package's own dist/ through its exports, as from a user's node_modules). To say what the
 * time is made of, it also times importing each app's module graph alone, without starting it, and counts the
 * ES modules each graph loads, by package (CommonJS files, such as most of Fastify's, are not counted).
 *
 *   node --import tsx bench/startup.ts     (BENCH_STARTUP_ROUNDS, default 5)
 */
import { execFileSync, spawn, spawnSync } from "node:child_process"
import { readFileSync, rmSync } from "node:fs"
import { benchPath, finish, freePort, mb, median, ms, ratio, type Row, section } from "./lib.js"

const rounds = Number(process.env["BENCH_STARTUP_ROUNDS"] ?? 5)
/** How long a server sits idle after its first answer before its resident memory is read. */
const idleMs = 3_000
const projectRoot = benchPath("..")
const build = benchPath(".build")

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** Resident set size of a live process, from /proc (Linux). */
const residentBytes = (pid: number): number => {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((entry) => entry.startsWith("VmRSS:"))
  return Number(line!.split(/\s+/)[1]) * 1024
}

interface Sample {
  readonly ms: number
  readonly rss: number
}

/** Starts a server with `args`, times it to its first `GET /healthz` 200, reads its RSS once idle, stops it. */
const measureStart = async (args: ReadonlyArray<string>): Promise<Sample> => {
  const port = await freePort()
  const startedAt = performance.now()
  const child = spawn(process.execPath, args, {
    cwd: projectRoot,
    env: { ...process.env, PORT: String(port), LOG_LEVEL: "Warn" },
    stdio: ["ignore", "ignore", "inherit"]
  })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  let listenMs = Number.NaN
  const giveUpAt = startedAt + 30_000
  while (performance.now() < giveUpAt && child.exitCode === null) {
    const answered = await fetch(`http://127.0.0.1:${port}/healthz`).then((response) => response.status === 200, () => false)
    if (answered) {
      listenMs = performance.now() - startedAt
      break
    }
    await sleep(5)
  }
  if (Number.isNaN(listenMs)) throw new Error(`${args.join(" ")} did not answer GET /healthz within 30 s`)
  await sleep(idleMs)
  const rss = residentBytes(child.pid!)
  child.kill("SIGTERM")
  const killer = setTimeout(() => child.kill("SIGKILL"), 10_000)
  await exited
  clearTimeout(killer)
  return { ms: listenMs, rss }
}

const importScript = (modules: ReadonlyArray<string>) =>
  modules.map((name) => `await import(${JSON.stringify(name)});`).join("")

/**
 * How long a fresh `node` takes to import `modules`, by its own clock (from its start to the end of the imports,
 * so without the cost of spawning it), and its RSS then.
 */
const measureImports = (modules: ReadonlyArray<string>): Sample =>
  JSON.parse(execFileSync(process.execPath, [
    "--input-type=module",
    "-e",
    `${importScript(modules)}process.stdout.write(JSON.stringify({ ms: performance.now(), rss: process.memoryUsage().rss }))`
  ], { cwd: projectRoot, encoding: "utf8" }))

/** The ES modules importing `modules` loads, counted by package (`keel` for dist/, `app` for the app's own). */
const countModules = (modules: ReadonlyArray<string>): Array<[string, number]> => {
  const hooks = `export async function load(url, context, next) {
    if (url.startsWith("file:")) process.stderr.write("module " + url + "\\n")
    return next(url, context)
  }`
  const register = `import { register } from "node:module"; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)})`
  const output = spawnSync(process.execPath, [
    "--import",
    `data:text/javascript,${encodeURIComponent(register)}`,
    "--input-type=module",
    "-e",
    importScript(modules)
  ], { cwd: projectRoot, encoding: "utf8" }).stderr
  const counts = new Map<string, number>()
  for (const [, url] of output.matchAll(/^module (.*)$/gm)) {
    const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url!)
    const owner = inPackage !== null ? inPackage[1]! : url!.includes("/dist/") ? "keel" : "app"
    counts.set(owner, (counts.get(owner) ?? 0) + 1)
  }
  return [...counts].sort(([, a], [, b]) => b - a)
}

section("startup: building dist/, compiling the two apps with tsc, bundling them with esbuild")
execFileSync("npm", ["run", "build"], { cwd: projectRoot, stdio: ["ignore", "ignore", "inherit"] })
rmSync(build, { recursive: true, force: true })
execFileSync(process.execPath, [
  benchPath("../node_modules/typescript/bin/tsc"),
  "--outDir", build,
  "--rootDir", projectRoot,
  "--module", "NodeNext",
  "--moduleResolution", "NodeNext",
  "--target", "ES2022",
  "--types", "node",
  "--skipLibCheck",
  "--noCheck",
  benchPath("../examples/job-server/main.ts"),
  benchPath("fixtures/fastify-jobs.ts")
], { cwd: projectRoot, stdio: "inherit" })
const jobServer = `${build}/examples/job-server/main.js`
const fastifyJobs = `${build}/bench/fixtures/fastify-jobs.js`
const bundled = (entry: string, name: string) => {
  const outfile = `${build}/bundled/${name}.mjs`
  execFileSync(benchPath("../node_modules/.bin/esbuild"), [
    entry,
    "--bundle",
    "--platform=node",
    "--format=esm",
    "--log-level=warning",
    // The job server loads keel/redis (and ioredis) only for JOB_QUEUE=redis.
    "--external:ioredis",
    `--outfile=${outfile}`,
    "--banner:js=import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);"
  ], { cwd: projectRoot, stdio: "inherit" })
  return outfile
}
const jobServerBundle = bundled(jobServer, "job-server")
const fastifyBundle = bundled(fastifyJobs, "fastify-jobs")

const servers = {
  keel: { name: "job server, node (built JS)", args: [jobServer] },
  keelBundled: { name: "job server, node (esbuild bundle)", args: [jobServerBundle] },
  keelTsx: { name: "job server, tsx (sources)", args: ["--conditions=@keel/source", "--import", "tsx", "examples/job-server/main.ts"] },
  fastify: { name: "Fastify + p-queue, node (built JS)", args: [fastifyJobs] },
  fastifyBundled: { name: "Fastify + p-queue, node (esbuild bundle)", args: [fastifyBundle] }
} as const

// Everything main.js imports, without starting the server: its module graph alone.
const graphs = {
  node: { name: "node alone", modules: [] },
  effect: { name: "effect/Effect alone", modules: ["effect/Effect"] },
  // What any @effect/platform HTTP service imports before Keel adds anything: the floor under the job server.
  platform: {
    name: "an @effect/platform HTTP app's graph",
    modules: [
      "@effect/platform/HttpServer",
      "@effect/platform/HttpServerRequest",
      "@effect/platform/HttpServerResponse",
      "@effect/platform-node/NodeStream",
      "effect/Schema",
      "effect/Layer",
      "effect/Config",
      "effect/Metric",
      "effect/Logger"
    ]
  },
  keel: {
    name: "the job server's module graph",
    modules: ["@effect/platform/HttpServer", "keel/memory", "keel/node", ...["app", "config", "downstream", "jobs"].map((module) => `${build}/examples/job-server/${module}.js`)]
  },
  fastify: { name: "Fastify + p-queue's module graph", modules: ["fastify", "p-queue"] }
} as const

const starts = new Map<string, Array<Sample>>(Object.values(servers).map(({ name }) => [name, []]))
const imports = new Map<string, Array<Sample>>(Object.values(graphs).map(({ name }) => [name, []]))
for (let round = 1; round <= rounds; round++) {
  section(`startup: round ${round} of ${rounds}`)
  for (const server of Object.values(servers)) {
    const start = await measureStart(server.args)
    starts.get(server.name)!.push(start)
    console.log(`${server.name.padEnd(42)} listening after ${ms(start.ms).padStart(7)}, idle RSS ${mb(start.rss)}`)
  }
  for (const graph of Object.values(graphs)) imports.get(graph.name)!.push(measureImports(graph.modules))
}

const summary = (samples: ReadonlyArray<Sample>): Sample => ({
  ms: median(samples.map((sample) => sample.ms)),
  rss: median(samples.map((sample) => sample.rss))
})

section("startup: importing the module graphs alone (median, by the importing process's clock from its start)")
for (const graph of Object.values(graphs)) {
  const { ms: importMs, rss } = summary(imports.get(graph.name)!)
  const counted = graph.modules.length === 0 ? [] : countModules(graph.modules)
  const total = counted.reduce((sum, [, count]) => sum + count, 0)
  const byPackage = counted.map(([owner, count]) => `${owner} ${count}`).join(", ")
  console.log(`${graph.name.padEnd(34)} ${ms(importMs).padStart(7)}  RSS ${mb(rss).padStart(8)}  ${total} ES modules${total > 0 ? `: ${byPackage}` : ""}`)
}

const of = (server: { readonly name: string }) => summary(starts.get(server.name)!)
const keel = of(servers.keel)
const keelBundled = of(servers.keelBundled)
const keelTsx = of(servers.keelTsx)
const fastify = of(servers.fastify)
const fastifyBundled = of(servers.fastifyBundled)
const keelGraph = summary(imports.get(graphs.keel.name)!)
const listenRatio = keel.ms / fastify.ms
const rssRatio = keel.rss / fastify.rss
const rows: Array<Row> = [
  { benchmark: "startup", metric: "time to listen, job server, node (built JS)", value: ms(keel.ms), target: "≤ 2× Fastify" },
  { benchmark: "startup", metric: "time to listen, Fastify + p-queue, node", value: ms(fastify.ms), target: "baseline" },
  { benchmark: "startup", metric: "time to listen, job server / Fastify", value: ratio(listenRatio), target: "≤ 2.00×", met: listenRatio <= 2 },
  { benchmark: "startup", metric: "job server module graph imported alone", value: ms(keelGraph.ms), target: "information" },
  { benchmark: "startup", metric: "time to listen, both bundled: job server / Fastify", value: `${ms(keelBundled.ms)} / ${ms(fastifyBundled.ms)} = ${ratio(keelBundled.ms / fastifyBundled.ms)}`, target: "information" },
  { benchmark: "startup", metric: "time to listen, job server, tsx (sources)", value: ms(keelTsx.ms), target: "information" },
  { benchmark: "startup", metric: "idle RSS, job server, node (built JS)", value: mb(keel.rss), target: "≤ 1.5× Fastify" },
  { benchmark: "startup", metric: "idle RSS, Fastify + p-queue, node", value: mb(fastify.rss), target: "baseline" },
  { benchmark: "startup", metric: "idle RSS, job server / Fastify", value: ratio(rssRatio), target: "≤ 1.50×", met: rssRatio <= 1.5 },
  { benchmark: "startup", metric: "idle RSS, both bundled: job server / Fastify", value: `${mb(keelBundled.rss)} / ${mb(fastifyBundled.rss)} = ${ratio(keelBundled.rss / fastifyBundled.rss)}`, target: "information" },
  { benchmark: "startup", metric: "idle RSS, job server, tsx (sources)", value: mb(keelTsx.rss), target: "information" }
]
await finish("startup", rows)
