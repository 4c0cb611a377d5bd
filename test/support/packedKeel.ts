/**
 * Keel as a user gets it: built, packed with `npm pack`, and installed with its peer dependencies into a
 * project of its own outside the repository, where nothing can resolve to the sources or to the
 * repository's node_modules. The consumer test, the README snippets and the API report all run against it.
 *
 * Building and installing take tens of seconds, so the project is made once per content of the package
 * (its sources, package.json, tsconfigs, README and license) and shared: by the test files of one run, which
 * may ask for it at the same time from several workers (the first takes a lock directory, the others wait
 * for its `ready` file), and by later runs while nothing it is made from has changed. npm's cache serves the
 * peers that `npm ci` already fetched for the repository.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join, relative } from "node:path"
import { repositoryRoot } from "./childProcess.js"

/** The packed tarball as `npm pack --json` describes it. */
export interface Tarball {
  readonly path: string
  readonly size: number
  readonly unpackedSize: number
  readonly files: ReadonlyArray<string>
}

export interface PackedKeel {
  readonly tarball: Tarball
  /** A project with the tarball and the peers every entry point needs, without the optional ones. */
  readonly project: string
  /**
   * The same, plus the optional peers (ioredis for `keel/redis`, the OpenTelemetry packages for tracing with
   * `keel/otel`) and what a TypeScript user of `keel/node` adds: @types/node.
   */
  readonly typesProject: string
}

/** What a user installs beside Keel for every entry point. */
const runtimePeers = ["effect", "@effect/platform", "@effect/platform-node"]

/** The optional peers, and Node's types for TypeScript users. */
const optionalPeersAndNodeTypes = [
  "ioredis",
  "@effect/opentelemetry",
  "@opentelemetry/api",
  "@opentelemetry/exporter-trace-otlp-http",
  "@opentelemetry/resources",
  "@opentelemetry/sdk-trace-base",
  "@opentelemetry/sdk-trace-node",
  "@opentelemetry/semantic-conventions",
  "@types/node"
]

const installedVersion = (name: string): string =>
  JSON.parse(readFileSync(join(repositoryRoot, "node_modules", name, "package.json"), "utf8")).version

/** `name@version` with the version the repository's own node_modules has, so that npm's cache serves it. */
const pinned = (name: string) => `${name}@${installedVersion(name)}`

const run = (command: string, args: ReadonlyArray<string>, cwd: string): string =>
  execFileSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 })

/** `npm install` from the cache where it can, quietly, recording the exact versions. */
const npmInstall = (project: string, specs: ReadonlyArray<string>): void => {
  run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--save-exact", ...specs], project)
}

/** A fresh project with a package.json of its own, so npm installs into it and not into a parent. */
const newProject = (directory: string): string => {
  mkdirSync(directory)
  writeFileSync(
    join(directory, "package.json"),
    JSON.stringify({ name: "keel-consumer", private: true, type: "module" }, null, 2)
  )
  return directory
}

const filesUnder = (directory: string): Array<string> =>
  readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name)
    return entry.isDirectory() ? filesUnder(path) : [path]
  })

/** A hash of everything the packed package and its projects are made from. */
const contentKey = (): string => {
  const hash = createHash("sha256")
  const inputs = [
    ...["src", "services", "layers"].flatMap((folder) => filesUnder(join(repositoryRoot, folder))),
    ...["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "README.md", "LICENSE"]
      .map((file) => join(repositoryRoot, file))
  ].sort()
  for (const file of inputs) {
    hash.update(relative(repositoryRoot, file))
    hash.update(readFileSync(file))
  }
  hash.update(JSON.stringify([runtimePeers, optionalPeersAndNodeTypes]))
  return hash.digest("hex").slice(0, 16)
}

const prefix = "keel-packed-"

const make = (directory: string): PackedKeel => {
  run("npm", ["run", "build"], repositoryRoot)
  const [packed] = JSON.parse(
    run("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", directory], repositoryRoot)
  ) as Array<{ filename: string; size: number; unpackedSize: number; files: Array<{ path: string }> }>
  const tarball: Tarball = {
    path: join(directory, packed!.filename),
    size: packed!.size,
    unpackedSize: packed!.unpackedSize,
    files: packed!.files.map((file) => file.path).sort()
  }
  const project = newProject(join(directory, "project"))
  npmInstall(project, [tarball.path, ...runtimePeers.map(pinned)])
  const typesProject = newProject(join(directory, "types"))
  npmInstall(typesProject, [tarball.path, ...[...runtimePeers, ...optionalPeersAndNodeTypes].map(pinned)])
  return { tarball, project, typesProject }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A lock older than this belongs to a run that died while making the project. */
const staleLockMs = 10 * 60_000

/** A packed project older than this (of other contents) is removed when a new one is made. */
const staleProjectMs = 60 * 60_000

/**
 * The packed and installed package for the current sources, made on first use. Waits at most `timeoutMs`
 * for another worker that is making it.
 */
export const packedKeel = async (timeoutMs = 240_000): Promise<PackedKeel> => {
  const key = contentKey()
  const directory = join(tmpdir(), `${prefix}${key}`)
  const ready = join(directory, "ready.json")
  const lock = `${directory}.lock`
  const deadline = Date.now() + timeoutMs
  while (true) {
    if (existsSync(ready)) return JSON.parse(readFileSync(ready, "utf8")) as PackedKeel
    try {
      mkdirSync(lock)
    } catch {
      const lockedAt = statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()
      if (Date.now() - lockedAt > staleLockMs) rmSync(lock, { force: true, recursive: true })
      if (Date.now() > deadline) throw new Error(`the packed package was not ready within ${timeoutMs} ms (lock ${lock})`)
      await sleep(250)
      continue
    }
    try {
      if (existsSync(ready)) continue
      // Projects packed from earlier contents are not needed any more, once no run can still be using them.
      for (const entry of readdirSync(tmpdir())) {
        const path = join(tmpdir(), entry)
        const modifiedAt = statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()
        if (entry.startsWith(prefix) && !entry.endsWith(".lock") && Date.now() - modifiedAt > staleProjectMs) {
          rmSync(path, { recursive: true, force: true })
        }
      }
      mkdirSync(directory, { recursive: true })
      const made = make(directory)
      writeFileSync(ready, JSON.stringify(made))
      return made
    } finally {
      rmSync(lock, { force: true, recursive: true })
    }
  }
}
