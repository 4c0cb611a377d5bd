/**
 * Checking the options Keel's constructors take, one way everywhere.
 *
 * A bad option (a capacity of 0, a negative rate, an infinite window) is a programming error, not something a
 * caller can handle, so the constructor dies rather than failing in the typed error channel — always with
 * Effect's `IllegalArgumentException`, whose message names the constructor, each bad option, what it must be
 * and what it got: `Middleware.rateLimit: limit must be an integer ≥ 1 (got 0)`.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/** One option's check: its name, its value, whether it is valid, and what it must be (for the message). */
export type Check = readonly [name: string, value: unknown, valid: boolean, expected: string]

const formatValue = (value: unknown): string =>
  Duration.isDuration(value) ? Duration.format(value) : typeof value === "string" ? JSON.stringify(value) : String(value)

/** The problem with the options, naming every bad one, or `undefined` when all are valid. */
export const problem = (owner: string, checks: ReadonlyArray<Check>): string | undefined => {
  const bad = checks.filter(([, , valid]) => !valid)
  return bad.length === 0
    ? undefined
    : `${owner}: ${bad.map(([name, value, , expected]) => `${name} must be ${expected} (got ${formatValue(value)})`).join("; ")}`
}

/** Dies with `IllegalArgumentException` naming every option that is not valid; succeeds when all are. */
export const validate = (owner: string, checks: ReadonlyArray<Check>): Effect.Effect<void> => {
  const found = problem(owner, checks)
  return found === undefined ? Effect.void : Effect.die(new Cause.IllegalArgumentException(found))
}

/** As `validate`, for a constructor that is not an Effect (a Schedule's): throws the same exception. */
export const assertValid = (owner: string, checks: ReadonlyArray<Check>): void => {
  const found = problem(owner, checks)
  if (found !== undefined) throw new Cause.IllegalArgumentException(found)
}

/** An integer (a safe one) of at least `minimum`. */
export const isIntegerFrom = (value: number, minimum: number): boolean => Number.isSafeInteger(value) && value >= minimum

/** What `isIntegerFrom(value, minimum)` requires, in the words of the message. */
export const integerFrom = (minimum: number): string => `an integer ≥ ${minimum}`

/** A finite duration longer than zero. */
export const isPositiveFinite = (duration: Duration.Duration): boolean =>
  Duration.isFinite(duration) && Duration.toMillis(duration) > 0

/** A rate between 0 and 1, both included. */
export const isRate = (value: number): boolean => value >= 0 && value <= 1

/** `input` as a Duration, or `undefined` when it is not one (so that the check names it instead of throwing). */
export const tryDuration = (input: Duration.DurationInput): Duration.Duration | undefined => {
  try {
    return Duration.decode(input)
  } catch {
    return undefined
  }
}
