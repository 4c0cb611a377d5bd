/**
 * Runs before vitest (`npm test`): the programs the end-to-end tests drive that npm cannot install.
 *
 * The Redis backends are tested against a real `redis-server`, mini-redis with Redis's own clients
 * (`redis-cli`, `redis-benchmark`), the job server's rolling restart behind a real `haproxy`, and its
 * `/metrics` as a real `prometheus` scrapes it. A test that cannot find its program would fail with a cryptic
 * `spawn … ENOENT` or take its whole file down, so they are looked for here, once, before any test starts:
 * where this process may (root, with apt-get) the distribution's packages are installed, as `.ci/run` on a
 * fresh machine needs; otherwise the run stops at once with one line naming what to install.
 */
import { spawnSync } from "node:child_process"
import { accessSync, constants } from "node:fs"
import { delimiter, join } from "node:path"

interface Program {
  readonly command: string
  /** The Debian/Ubuntu package that provides it. */
  readonly debianPackage: string
}

const programs: ReadonlyArray<Program> = [
  { command: "redis-server", debianPackage: "redis-server" },
  { command: "redis-cli", debianPackage: "redis-tools" },
  { command: "redis-benchmark", debianPackage: "redis-tools" },
  { command: "haproxy", debianPackage: "haproxy" },
  { command: "prometheus", debianPackage: "prometheus" }
]

const onPath = (command: string): boolean =>
  (process.env["PATH"] ?? "").split(delimiter).some((directory) => {
    try {
      accessSync(join(directory, command), constants.X_OK)
      return true
    } catch {
      return false
    }
  })

const missingPrograms = () => programs.filter((program) => !onPath(program.command))

const packagesOf = (missing: ReadonlyArray<Program>) => [...new Set(missing.map((program) => program.debianPackage))]

const stop = (line: string): never => {
  process.stderr.write(`npm test: ${line}\n`)
  process.exit(1)
}

const majorNodeVersion = Number(process.versions.node.split(".")[0])
if (majorNodeVersion < 20) stop(`Node ${process.versions.node} is too old: Keel needs Node 20 or later`)

const missing = missingPrograms()
if (missing.length > 0) {
  const packages = packagesOf(missing)
  const names = missing.map((program) => program.command).join(", ")
  const canInstall = process.getuid?.() === 0 && onPath("apt-get")
  if (!canInstall) {
    stop(`${names} not found; install them first: sudo apt-get install ${packages.join(" ")} (Debian/Ubuntu)`)
  }
  process.stderr.write(`npm test: ${names} not found; installing ${packages.join(" ")} with apt-get\n`)
  const environment = { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  const update = spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit", env: environment })
  const install = update.status === 0
    ? spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...packages], {
      stdio: ["ignore", "ignore", "inherit"],
      env: environment
    })
    : update
  const stillMissing = missingPrograms()
  if (install.status !== 0 || stillMissing.length > 0) {
    stop(
      `could not install ${packages.join(" ")} with apt-get (exit ${install.status}); ` +
        `install them by hand: apt-get install ${packages.join(" ")}`
    )
  }
}
