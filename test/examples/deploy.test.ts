/**
 * The job server's deployment guidance is checked, not only written: the Kubernetes manifest and the
 * HAProxy file in `examples/job-server/deploy/` must keep the rules of one honest deadline
 * (`terminationGracePeriodSeconds ≥ PRE_STOP_DELAY + DRAIN_TIMEOUT + 5 s`) and of a pre-stop delay longer
 * than the time the load balancer takes to notice readiness fail. A change to either file that breaks
 * them fails here, with the rule in words.
 */
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import {
  haproxyDetectionMs,
  haproxyFile,
  kubeletDetectionMs,
  manifestFile,
  parseDeployment,
  readDeployment,
  readHealthChecks,
  violations
} from "../support/deployment.js"

describe("job server deployment guidance", () => {
  it("the manifest and the HAProxy file keep every rule", () => {
    const deployment = readDeployment()
    const checks = readHealthChecks()
    expect(violations(deployment, checks)).toEqual([])
    console.log(
      `deploy: grace ${deployment.terminationGracePeriodSeconds} s ≥ pre-stop ${deployment.preStopDelayMs} ms + ` +
        `drain ${deployment.drainTimeoutMs} ms + 5 s; load balancers notice within ${kubeletDetectionMs(deployment.readinessProbe)} ms ` +
        `(kubelet) and ${haproxyDetectionMs(checks)} ms (HAProxy)`
    )
  })

  it("the job server in the manifest is the one a rolling update expects", () => {
    const deployment = readDeployment()
    expect(deployment.env).toMatchObject({ HOST: "0.0.0.0", JOB_QUEUE: "redis" })
    expect(deployment.containerPort.containerPort).toBe(Number(deployment.env["PORT"]))
    expect([deployment.readinessProbe.port, deployment.livenessProbe.port]).toEqual([
      deployment.containerPort.name,
      deployment.containerPort.name
    ])
    // The Redis the servers share is the one the manifest defines.
    const redisHost = new URL(deployment.env["REDIS_URL"]!).hostname
    expect(deployment.services).toContain(redisHost)
    // Kubernetes' default grace period, kept: the defaults fit it.
    expect(deployment.terminationGracePeriodSeconds).toBe(30)
  })

  it("breaking a number is caught, with the rule in words", () => {
    const manifest = readFileSync(manifestFile, "utf8")
    const checks = readHealthChecks()
    const longerDrain = parseDeployment(manifest.replace(/value: 20 seconds/, "value: 25 seconds"))
    expect(violations(longerDrain, checks)).toEqual([
      "terminationGracePeriodSeconds 30 is below PRE_STOP_DELAY 5000 ms + DRAIN_TIMEOUT 25000 ms + 5000 ms"
    ])
    const shortDelay = parseDeployment(manifest.replace(/value: 5 seconds/, "value: 2 seconds"))
    expect(violations(shortDelay, checks)).toEqual([
      "the readiness probe takes up to 3000 ms to fail, longer than PRE_STOP_DELAY 2000 ms",
      "HAProxy takes up to 2500 ms to mark a server down, longer than PRE_STOP_DELAY 2000 ms"
    ])
    const embedded = parseDeployment(manifest.replace(/value: redis\n/, "value: memory\n"))
    expect(violations(embedded, checks)).toEqual([
      "several replicas on the embedded queue: each holds its own jobs; JOB_QUEUE must be redis"
    ])
    expect(() => parseDeployment(manifest.replace(/value: 5 seconds/, "value: 5 parsecs"))).toThrow(/PRE_STOP_DELAY/)
  })

  it("HAProxy accepts its file", () => {
    const check = spawnSync("haproxy", ["-c", "-f", haproxyFile], {
      env: {
        ...process.env,
        LB_BIND: "127.0.0.1:8080",
        LB_STATS_BIND: "127.0.0.1:8404",
        JOB_SERVER_1: "127.0.0.1:3001",
        JOB_SERVER_2: "127.0.0.1:3002",
        JOB_SERVER_3: "127.0.0.1:3003"
      },
      encoding: "utf8",
      timeout: 10_000
    })
    expect(check.error).toBeUndefined()
    expect(`${check.stdout}${check.stderr}`).toMatch(/Configuration file is valid/)
    expect(check.status).toBe(0)
  })
})
