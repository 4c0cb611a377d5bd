/**
 * Keel's property-testing kit, `import { FaultInjection, Ledger } from "keel/testing"`: make your own
 * services fail on purpose, generate whole failure scenarios that shrink, and check the invariants that
 * matter when they do (exactly one outcome per accepted item, no fiber left behind, every permit returned),
 * on virtual time. Built on `effect` alone (TestClock, Supervisor, `effect/FastCheck`), so it runs under
 * `@effect/vitest` or any other runner.
 */
export * as FaultInjection from "./FaultInjection.js"
export * as FaultPlan from "./FaultPlan.js"
export * as FiberLeaks from "./FiberLeaks.js"
export {
  interruptEverywhere,
  InvariantBroken,
  type Options,
  type Outcome,
  type Phase,
  type Report,
  scenario,
  type Scenario,
  Stuck,
  TooManySuspensionPoints
} from "./interruptEverywhere.js"
export * as Ledger from "./Ledger.js"
export * as Permits from "./Permits.js"
export * as PropertyRuns from "./PropertyRuns.js"
export * as Simulation from "./Simulation.js"
export * as VirtualTime from "./VirtualTime.js"
