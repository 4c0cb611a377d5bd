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

/** The number of cases per property: `KEEL_PROPERTY_RUNS` (a positive integer), else 100. */
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

/** The options `it.effect.prop` / `it.prop` take: `runs()` cases from a fixed `seed`. */
export const fastCheck = (seed: number) => ({ fastCheck: { numRuns: runs(), seed } })
