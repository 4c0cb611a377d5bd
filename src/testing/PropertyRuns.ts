/**
 * PropertyRuns — how many cases a property test runs: 100 by default, as many as `KEEL_PROPERTY_RUNS` says
 * when it is set (`KEEL_PROPERTY_RUNS=1000 npm test` for a long run before a release).
 *
 * Every property in a suite takes its options from `fastCheck(seed)`, so one variable scales them all and a
 * failure is replayed by its seed (fast-check prints the seed and the shrunk counterexample). The variable
 * is read from the environment when there is one (Node, Bun, Deno's `process`); elsewhere the default holds.
 */

/** Cases per property when `KEEL_PROPERTY_RUNS` is not set. */
export const defaultRuns = 100

/**
 * The number of cases per property: `KEEL_PROPERTY_RUNS` (a positive integer), else 100. Reads the variable
 * on every call; throws an `Error` when it is set to anything but a positive integer.
 */
export const runs = (): number => {
  const environment = (globalThis as { readonly process?: { readonly env?: Record<string, string | undefined> } })
    .process?.env
  const text = environment?.["KEEL_PROPERTY_RUNS"]
  if (text === undefined || text === "") return defaultRuns
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`KEEL_PROPERTY_RUNS must be a positive integer, got "${text}"`)
  }
  return value
}

/**
 * The options `it.effect.prop` / `it.prop` take: `runs()` cases from a fixed `seed`. Reads
 * `KEEL_PROPERTY_RUNS` when called, and throws as `runs` does when it is not a positive integer.
 *
 * @example
 * ```ts
 * import { FastCheck as fc } from "effect"
 * import { PropertyRuns } from "keel/testing"
 *
 * // 100 cases, or KEEL_PROPERTY_RUNS of them, always from seed 42.
 * fc.assert(fc.property(fc.integer(), (n) => n + 0 === n), PropertyRuns.fastCheck(42).fastCheck)
 * ```
 */
export const fastCheck = (seed: number) => ({
  /** The fast-check parameters, under the key `@effect/vitest` reads them from. */
  fastCheck: {
    /** Cases to run: `runs()`. */
    numRuns: runs(),
    /** The seed the cases are drawn from: the same seed draws the same cases. */
    seed
  }
})
