/**
 * Calls per second through a resilience stack on a no-op service: what the policies themselves cost.
 *
 *   (a) Keel: `stack(timeout, rateLimit (a limit no run reaches), circuitBreaker, retry)` around
 *       `() => Effect.void`, calls made one after another inside one fiber;
 *   (b) cockatiel: `wrap(timeout, bulkhead, circuitBreaker, retry)` around a no-op async function, awaited one
 *       after another (cockatiel has no rate limiter; a bulkhead no run fills stands in for it);
 *   (c) the bare Keel service, for scale.
 *
 * Target: Keel ≥ 1.0× cockatiel. After a warm-up the contenders alternate for BENCH_REPETITIONS rounds
 * (default 5) of BENCH_CALLS calls (default 100 000); medians are reported.
 */
import { Effect } from "effect"
import { Middleware } from "keel"
import {
  bulkhead,
  circuitBreaker as cockatielBreaker,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleAll,
  retry as cockatielRetry,
  timeout as cockatielTimeout,
  TimeoutStrategy,
  wrap
} from "cockatiel"
import { collectGarbage, finish, median, perSecond, ratio, section, verdict } from "./lib.js"
import type { Row } from "./lib.js"

const calls = Number(process.env["BENCH_CALLS"] ?? 100_000)
const repetitions = Number(process.env["BENCH_REPETITIONS"] ?? 5)

const callsPerSecond = (startedAt: number) => calls / ((performance.now() - startedAt) / 1000)

const callRepeatedly = (service: Middleware.Service<void, void, unknown>) =>
  Effect.suspend(() => {
    const startedAt = performance.now()
    let made = 0
    return Effect.whileLoop({ while: () => made < calls, body: () => (made++, service(undefined)), step: () => {} }).pipe(
      Effect.map(() => callsPerSecond(startedAt))
    )
  })

const noop: Middleware.Service<void, void> = () => Effect.void

const keelStack = Effect.gen(function*() {
  const rateLimit = yield* Middleware.rateLimit({ limit: 1_000_000_000, per: "1 second" })
  const breaker = yield* Middleware.circuitBreaker({ policy: { kind: "consecutive", failures: 5 }, openFor: "10 seconds" })
  const retry = yield* Middleware.retry({ backoff: { base: "100 millis", max: "2 seconds", maxAttempts: 3 } })
  const timeout = yield* Middleware.timeout({ after: "1 second" })
  return Middleware.stack(timeout, rateLimit, breaker, retry)(noop)
})

const runKeel = () => Effect.runPromise(Effect.scoped(Effect.flatMap(keelStack, callRepeatedly)))
const runBare = () => Effect.runPromise(callRepeatedly(noop))

const cockatielPolicy = wrap(
  cockatielTimeout(1000, TimeoutStrategy.Aggressive),
  bulkhead(1_000_000),
  cockatielBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
  cockatielRetry(handleAll, { maxAttempts: 2, backoff: new ExponentialBackoff() })
)
const runCockatiel = async () => {
  const noopAsync = async () => {}
  const startedAt = performance.now()
  for (let made = 0; made < calls; made++) await cockatielPolicy.execute(noopAsync)
  return callsPerSecond(startedAt)
}

const contenders = [
  { name: "Keel stack", run: runKeel },
  { name: "cockatiel wrap", run: runCockatiel },
  { name: "bare service", run: runBare }
]

section(`middleware: ${calls.toLocaleString("en-US")} sequential calls, ${repetitions} rounds after a warm-up`)
for (const contender of contenders) {
  collectGarbage()
  console.log(`warm-up ${contender.name}: ${perSecond(await contender.run())}`)
}
const samples = new Map(contenders.map((contender) => [contender.name, [] as Array<number>]))
for (let round = 1; round <= repetitions; round++) {
  const line: Array<string> = []
  for (const contender of contenders) {
    collectGarbage()
    const rate = await contender.run()
    samples.get(contender.name)!.push(rate)
    line.push(`${contender.name} ${perSecond(rate)}`)
  }
  console.log(`round ${round}: ${line.join(", ")}`)
}
const medianOf = (name: string) => median(samples.get(name)!)
const keelOverCockatiel = medianOf("Keel stack") / medianOf("cockatiel wrap")
console.log(`Keel / cockatiel: ${ratio(keelOverCockatiel)} (target ≥ 1×: ${verdict(keelOverCockatiel >= 1)})`)

const rows: Array<Row> = [
  ...contenders.map((contender) => ({
    benchmark: "middleware",
    metric: `${contender.name}, median`,
    value: perSecond(medianOf(contender.name)),
    target: ""
  })),
  { benchmark: "middleware", metric: "Keel / cockatiel", value: ratio(keelOverCockatiel), target: "≥ 1×", met: keelOverCockatiel >= 1 },
  {
    benchmark: "middleware",
    metric: "Keel stack / bare service",
    value: ratio(medianOf("Keel stack") / medianOf("bare service")),
    target: ""
  }
]
await finish("middleware", rows)
