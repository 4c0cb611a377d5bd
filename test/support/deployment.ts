/**
 * The job server's deployment guidance (`examples/job-server/deploy/`) read as numbers: the Kubernetes
 * manifest's grace period, probes and the server's settings (parsed by the server's own `Config`), and
 * HAProxy's health-check timing. `violations` states the rules those numbers must keep for a rolling
 * restart to lose nothing; the deployment test checks the shipped files with it, and the rolling-restart
 * drill runs the servers with the manifest's settings behind the shipped HAProxy file.
 */
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import * as Yaml from "yaml"
import { settings } from "../../examples/job-server/config.js"
import { repositoryRoot } from "./childProcess.js"

export const deployDirectory = join(repositoryRoot, "examples", "job-server", "deploy")
export const manifestFile = join(deployDirectory, "kubernetes.yaml")
export const haproxyFile = join(deployDirectory, "haproxy.cfg")

/** Time an orchestrator needs beyond the drain for the runtime's own exit: the margin the README states. */
export const exitMarginMs = 5_000

export interface Probe {
  readonly path: string
  readonly port: string | number
  readonly periodSeconds: number
  readonly failureThreshold: number
  readonly timeoutSeconds: number
}

export interface Deployment {
  readonly replicas: number
  readonly terminationGracePeriodSeconds: number
  /** The container's environment, as the job server reads it. */
  readonly env: Record<string, string>
  readonly readinessProbe: Probe
  readonly livenessProbe: Probe
  readonly containerPort: { readonly name: string; readonly containerPort: number }
  /** The names of the Services the manifest defines. */
  readonly services: ReadonlyArray<string>
  /** The job server's settings from `env`, parsed by its own Config (defaults for what is not set). */
  readonly preStopDelayMs: number
  readonly drainTimeoutMs: number
}

/** HAProxy's health-check timing for the job servers' backend. */
export interface HealthChecks {
  readonly path: string
  readonly interMs: number
  readonly fastinterMs: number
  readonly fall: number
  readonly rise: number
  readonly checkTimeoutMs: number
}

interface Manifest {
  readonly kind: string
  readonly metadata: { readonly name: string }
  readonly spec: Record<string, any>
}

const probeOf = (probe: any): Probe => ({
  path: probe.httpGet.path,
  port: probe.httpGet.port,
  periodSeconds: probe.periodSeconds ?? 10,
  failureThreshold: probe.failureThreshold ?? 3,
  timeoutSeconds: probe.timeoutSeconds ?? 1
})

export const parseDeployment = (text: string): Deployment => {
  const documents = Yaml.parseAllDocuments(text).map((document) => document.toJS() as Manifest)
  const deployment = documents.find((document) => document.kind === "Deployment" && document.metadata.name === "job-server")
  if (deployment === undefined) throw new Error("no Deployment named job-server")
  const pod = deployment.spec["template"].spec
  const container = pod.containers.find((candidate: any) => candidate.name === "job-server")
  const env: Record<string, string> = Object.fromEntries(
    (container.env as Array<{ name: string; value: string }>).map(({ name, value }) => [name, String(value)])
  )
  const parsed = Effect.runSync(
    Effect.withConfigProvider(settings, ConfigProvider.fromMap(new Map(Object.entries(env))))
  )
  return {
    replicas: deployment.spec["replicas"] ?? 1,
    terminationGracePeriodSeconds: pod.terminationGracePeriodSeconds ?? 30,
    env,
    readinessProbe: probeOf(container.readinessProbe),
    livenessProbe: probeOf(container.livenessProbe),
    containerPort: container.ports[0],
    services: documents.filter((document) => document.kind === "Service").map((document) => document.metadata.name),
    preStopDelayMs: Duration.toMillis(parsed.preStopDelay),
    drainTimeoutMs: Duration.toMillis(parsed.drainTimeout)
  }
}

/** HAProxy's time notation: a number with an optional unit (`us`, `ms`, `s`, `m`, `h`, `d`); milliseconds by default. */
const haproxyMillis = (time: string): number => {
  const match = time.match(/^(\d+)(us|ms|s|m|h|d)?$/)
  if (match === null) throw new Error(`not an HAProxy time: ${time}`)
  const unit = { us: 0.001, ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] ?? "ms"]!
  return Number(match[1]) * unit
}

export const parseHealthChecks = (text: string, backend: string): HealthChecks => {
  const lines = text.split("\n").map((line) => line.replace(/#.*/, "").trim())
  const sectionOf = (header: string) => {
    const start = lines.indexOf(header)
    if (start < 0) throw new Error(`no section "${header}"`)
    const end = lines.findIndex((line, index) => index > start && /^(global|defaults|frontend|backend|listen)\b/.test(line))
    return lines.slice(start + 1, end < 0 ? undefined : end)
  }
  const defaults = sectionOf("defaults")
  const section = sectionOf(`backend ${backend}`)
  const words = (line: string | undefined) => (line ?? "").split(/\s+/)
  const keyword = (entries: ReadonlyArray<string>, name: string) => entries.find((line) => line.startsWith(name))
  const serverDefaults = words(keyword(section, "default-server"))
  const setting = (name: string, fallback: string) => {
    const at = serverDefaults.indexOf(name)
    return at < 0 ? fallback : serverDefaults[at + 1]!
  }
  const check = words(keyword(section, "option httpchk"))
  const checkTimeout = words(keyword(section, "timeout check") ?? keyword(defaults, "timeout check"))[2]
  const interMs = haproxyMillis(setting("inter", "2s"))
  return {
    path: check[check.length - 1]!,
    interMs,
    fastinterMs: haproxyMillis(setting("fastinter", String(interMs))),
    fall: Number(setting("fall", "3")),
    rise: Number(setting("rise", "2")),
    checkTimeoutMs: checkTimeout === undefined ? interMs : haproxyMillis(checkTimeout)
  }
}

export const readDeployment = () => parseDeployment(readFileSync(manifestFile, "utf8"))
export const readHealthChecks = () => parseHealthChecks(readFileSync(haproxyFile, "utf8"), "job_servers")

/**
 * The longest HAProxy takes to mark a server down after its readiness fails: the check just passed, so the
 * next comes after `inter`, then `fall - 1` more at `fastinter`, each allowed `timeout check`.
 */
export const haproxyDetectionMs = (checks: HealthChecks) =>
  checks.interMs + (checks.fall - 1) * checks.fastinterMs + checks.checkTimeoutMs

/** The longest a kubelet takes to see readiness fail: `failureThreshold` probes, each allowed its timeout. */
export const kubeletDetectionMs = (probe: Probe) =>
  probe.failureThreshold * probe.periodSeconds * 1_000 + probe.timeoutSeconds * 1_000

/** Each rule the numbers break, in words; empty when the deployment keeps them all. */
export const violations = (deployment: Deployment, checks: HealthChecks): Array<string> => {
  const found: Array<string> = []
  const budgetMs = deployment.preStopDelayMs + deployment.drainTimeoutMs + exitMarginMs
  if (deployment.terminationGracePeriodSeconds * 1_000 < budgetMs) {
    found.push(
      `terminationGracePeriodSeconds ${deployment.terminationGracePeriodSeconds} is below PRE_STOP_DELAY ` +
        `${deployment.preStopDelayMs} ms + DRAIN_TIMEOUT ${deployment.drainTimeoutMs} ms + ${exitMarginMs} ms`
    )
  }
  if (deployment.preStopDelayMs <= 0) found.push("PRE_STOP_DELAY is 0: load balancers route here after SIGTERM")
  if (kubeletDetectionMs(deployment.readinessProbe) > deployment.preStopDelayMs) {
    found.push(
      `the readiness probe takes up to ${kubeletDetectionMs(deployment.readinessProbe)} ms to fail, ` +
        `longer than PRE_STOP_DELAY ${deployment.preStopDelayMs} ms`
    )
  }
  if (haproxyDetectionMs(checks) > deployment.preStopDelayMs) {
    found.push(
      `HAProxy takes up to ${haproxyDetectionMs(checks)} ms to mark a server down, longer than PRE_STOP_DELAY ` +
        `${deployment.preStopDelayMs} ms`
    )
  }
  if (deployment.readinessProbe.path !== "/readyz") found.push(`readiness probe on ${deployment.readinessProbe.path}, not /readyz`)
  if (deployment.livenessProbe.path !== "/livez") found.push(`liveness probe on ${deployment.livenessProbe.path}, not /livez`)
  if (checks.path !== "/readyz") found.push(`HAProxy checks ${checks.path}, not /readyz`)
  if (deployment.replicas < 2) found.push(`${deployment.replicas} replica: a restart leaves no one to serve`)
  if (deployment.replicas > 1 && deployment.env["JOB_QUEUE"] !== "redis") {
    found.push("several replicas on the embedded queue: each holds its own jobs; JOB_QUEUE must be redis")
  }
  return found
}
