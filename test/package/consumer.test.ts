/**
 * Keel as a user's project sees it: the packed tarball installed with its peers into a project outside the
 * repository (see `packedKeel`). A plain `node` program with no loader imports the built JavaScript and is
 * stopped with a real SIGTERM; another exports its spans to an OTLP/HTTP receiver, and without the optional
 * OpenTelemetry peers keel/otel still loads and stays off; `tsc --strict` checks a file that uses every
 * entry point, every `@example` of the API reference and every README snippet, under both of TypeScript's
 * module resolutions a project picks from; the tarball holds only what `files` names.
 */
import { execFileSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { killLeftovers, repositoryRoot, startNode } from "../support/childProcess.js"
import { documentedExamples } from "../support/docExamples.js"
import * as OtlpReceiver from "../support/otlpReceiver.js"
import { type PackedKeel, packedKeel } from "../support/packedKeel.js"
import { readmeSnippets } from "../support/readmeSnippets.js"

const entryPoints = ["keel", "keel/node", "keel/http", "keel/memory", "keel/redis", "keel/otel", "keel/services", "keel/testing"]

let packed: PackedKeel

beforeAll(async () => {
  packed = await packedKeel()
}, 300_000)

afterEach(killLeftovers)

// A worker pool fed from the embedded job queue, stopped by SIGTERM while jobs run: the drain lets the
// running jobs finish and the shutdown report says so.
const drainingProgram = `
import { Effect } from "effect"
import { WorkerPool } from "keel"
import { MemoryJobQueue } from "keel/memory"
import { runMain } from "keel/node"

const program = Effect.gen(function*() {
  const queue = yield* MemoryJobQueue.make({ capacity: 100, leaseDuration: "5 seconds", maxDeliveries: 3 })
  for (let job = 1; job <= 4; job++) yield* queue.offer({ job }, { id: "job-" + job })
  const pool = yield* WorkerPool.consume(queue, {
    name: "mailer",
    workers: 4,
    handler: (payload) => Effect.sleep("400 millis").pipe(Effect.zipRight(Effect.log("sent " + payload.job)))
  })
  yield* Effect.sleep("100 millis")
  const stats = yield* pool.stats
  yield* Effect.log("running " + stats.inFlight)
  yield* Effect.never
}).pipe(Effect.scoped)

runMain(program, { drainTimeout: "5 seconds", logger: "logfmt" })
`

// A traced run under runMain: tracing turned on by the environment, one span with a log line inside it.
const tracedProgram = `
import { Effect } from "effect"
import { runMain } from "keel/node"
import { Otel } from "keel/otel"

const program = Effect.log("charged").pipe(
  Effect.withSpan("charge", { attributes: { "payment.cents": 1250 } }),
  Effect.provide(Otel.fromEnv({ serviceName: "payments" }))
)

runMain(program, { logger: "json" })
`

// keel/otel where the OpenTelemetry packages are not installed: off, it runs; on, it names what is missing.
const tracingWithoutPeers = `
import { Cause, Effect, Exit } from "effect"
import { Otel } from "keel/otel"

console.log(await Effect.runPromise(Effect.provide(Effect.succeed("untraced run"), Otel.fromEnv())))
const on = Otel.layer({ serviceName: "payments", tracesEndpoint: "http://127.0.0.1:4318/v1/traces" })
const exit = await Effect.runPromiseExit(Effect.provide(Effect.void, on))
console.log(Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "tracing on")
`

const writeProgram = (project: string, name: string, source: string): string => {
  const directory = join(project, `run-${process.pid}`)
  mkdirSync(directory, { recursive: true })
  writeFileSync(join(directory, name), source)
  return directory
}

describe("the packed package in a user's project", () => {
  it("the tarball holds dist/, the README, the license and package.json, and nothing else", () => {
    const { files, size, unpackedSize } = packed.tarball
    console.log(`keel tarball: ${files.length} files, ${(size / 1024).toFixed(1)} kB packed, ${(unpackedSize / 1024).toFixed(1)} kB unpacked`)
    const outside = files.filter((file) => !file.startsWith("dist/") && !["README.md", "LICENSE", "package.json"].includes(file))
    expect(outside).toEqual([])
    for (const folder of ["test/", "bench/", "examples/", ".snippets/", "src/", "layers/", "services/", "docs/"]) {
      expect(files.filter((file) => file.startsWith(folder))).toEqual([])
    }
    expect(files).toEqual(expect.arrayContaining(["README.md", "LICENSE", "package.json"]))
    // Every export points at a file the tarball has.
    const manifest = JSON.parse(readFileSync(join(repositoryRoot, "package.json"), "utf8"))
    for (const [entry, conditions] of Object.entries<Record<string, string>>(manifest.exports)) {
      for (const condition of ["types", "import"]) {
        expect(files, `${entry} ${condition}`).toContain(conditions[condition]!.replace(/^\.\//, ""))
      }
    }
  })

  it("a plain node program imports keel, keel/node and keel/memory, drains on SIGTERM and exits 0", async () => {
    // keel/node and keel/memory run without ioredis, which only keel/redis needs.
    expect(existsSync(join(packed.project, "node_modules", "ioredis"))).toBe(false)
    const run = startNode(writeProgram(packed.project, "main.mjs", drainingProgram), "main.mjs")
    await run.waitForOutput(/running 4/, 20_000)
    run.signal("SIGTERM")
    const exited = await run.waitForExit(20_000)
    console.log(`plain node program, exit ${JSON.stringify(exited)}:\n${run.output()}`)
    expect(exited, run.output()).toEqual({ code: 0, signal: null })
    const output = run.output()
    for (let job = 1; job <= 4; job++) expect(output).toContain(`sent ${job}`)
    expect(output).toMatch(/shutdown clean: trigger SIGTERM, 4 finished, 0 forced, 0 unfinished/)
  })

  it("a plain node program traced by keel/otel exports its span, and its log line carries the span's ids", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const receiver = yield* OtlpReceiver.start()
      const directory = writeProgram(packed.typesProject, "traced.mjs", tracedProgram)
      const run = startNode(directory, "traced.mjs", { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint })
      const exited = yield* Effect.promise(() => run.waitForExit(20_000))
      expect(exited, run.output()).toEqual({ code: 0, signal: null })
      const [charge] = yield* receiver.spans
      expect(charge, run.output()).toMatchObject({ service: "payments", name: "charge", attributes: { "payment.cents": 1250 } })
      const line = run.output().split("\n").find((line) => line.includes(`"charged"`))
      expect(JSON.parse(line!).annotations).toEqual({ trace_id: charge!.traceId, span_id: charge!.spanId })
    })))
  })

  it("keel/otel without the OpenTelemetry packages runs untraced, and tracing on names the missing package", async () => {
    expect(existsSync(join(packed.project, "node_modules", "@effect", "opentelemetry"))).toBe(false)
    const run = startNode(writeProgram(packed.project, "untraced.mjs", tracingWithoutPeers), "untraced.mjs")
    const exited = await run.waitForExit(20_000)
    expect(exited, run.output()).toEqual({ code: 0, signal: null })
    expect(run.output()).toMatch(/untraced run\n[\s\S]*Cannot find package '@effect\/opentelemetry'/)
  })

  it("keel/redis without ioredis installed fails to load, naming ioredis", () => {
    const attempt = () =>
      execFileSync(process.execPath, ["--input-type=module", "-e", "await import('keel/redis')"], {
        cwd: packed.project,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"]
      })
    expect(attempt).toThrow(/Cannot find package 'ioredis'/)
  })

  describe("tsc --strict on a consumer's file using every entry point, the documented examples and the README", () => {
    let typesProject: string

    beforeAll(() => {
      // The consumer's file and the examples, in a folder of this run inside the project with the types.
      typesProject = join(packed.typesProject, `check-${process.pid}`)
      rmSync(typesProject, { recursive: true, force: true })
      mkdirSync(join(typesProject, "examples"), { recursive: true })
      cpSync(join(repositoryRoot, "test", "package", "fixtures", "consumer.ts"), join(typesProject, "consumer.ts"))
      const examples = [
        ...documentedExamples(),
        ...readmeSnippets().map((snippet) => ({ file: `README-${snippet.name}.ts`, source: snippet.source }))
      ]
      for (const example of examples) writeFileSync(join(typesProject, "examples", example.file), example.source)
      console.log(`type-checking consumer.ts and ${examples.length} examples (TSDoc @example blocks and README snippets)`)
    })

    const compilerOptions = {
      strict: true,
      noEmit: true,
      target: "ES2022",
      lib: ["ES2022", "DOM"],
      types: ["node"],
      skipLibCheck: false,
      exactOptionalPropertyTypes: true,
      noUnusedLocals: false
    }

    it.each([
      { moduleResolution: "NodeNext", module: "NodeNext" },
      { moduleResolution: "Bundler", module: "ESNext" }
    ])("moduleResolution $moduleResolution", ({ moduleResolution, module }) => {
      const config = `tsconfig.${moduleResolution.toLowerCase()}.json`
      writeFileSync(
        join(typesProject, config),
        JSON.stringify({ compilerOptions: { ...compilerOptions, module, moduleResolution }, include: ["consumer.ts", "examples"] })
      )
      const tsc = join(repositoryRoot, "node_modules", "typescript", "bin", "tsc")
      let output = ""
      let code = 0
      try {
        output = execFileSync(process.execPath, [tsc, "-p", config], { cwd: typesProject, encoding: "utf8" })
      } catch (error) {
        const failed = error as { status: number; stdout: string; stderr: string }
        code = failed.status
        output = failed.stdout + failed.stderr
      }
      console.log(`tsc -p ${config} (moduleResolution ${moduleResolution}, strict): exit ${code}${output ? `\n${output}` : ""}`)
      expect(output).toBe("")
      expect(code).toBe(0)
    }, 120_000)
  })

  it("names every entry point in the consumer's file", () => {
    const consumer = readFileSync(join(repositoryRoot, "test", "package", "fixtures", "consumer.ts"), "utf8")
    for (const entry of entryPoints) expect(consumer).toContain(`from "${entry}"`)
  })
})
