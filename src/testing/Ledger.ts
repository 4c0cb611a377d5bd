/**
 * Ledger — the "nothing accepted is lost silently" invariant as a checkable record.
 *
 * A pool, a queue backend or a server promises that every item it accepted ends in exactly one outcome.
 * A property test states that promise by writing down both sides as they happen — `accept(id)` where the
 * system took the item, `settle(id, outcome)` where it reached its end (completed, dead-lettered, handed
 * back) — and asking the ledger at the end. `check` fails with one `LedgerViolation` that lists every
 * kind of break at once: items accepted twice, items accepted but never settled (lost), items settled more
 * than once, and items settled without ever being accepted. `checkAgainst(ids)` also states which ids must
 * have been accepted (those whose submission the caller saw succeed).
 *
 * "Settled without being accepted" is judged when checking, not when settling: a worker may record an
 * outcome before the submitter records the acceptance, and that order is not a bug.
 *
 * Ids are compared as `Map` keys (by identity: use strings or numbers). The ledger is bounded: it holds at
 * most `maxEntries` distinct ids, and recording one more dies with a message saying so.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Validation from "../internal/Validation.js"

/** Options of `make`. */
export interface LedgerOptions<Outcome> {
  /** Distinct ids the ledger holds; recording one more dies. An integer ≥ 1 (else a defect). Default 1,000,000. */
  readonly maxEntries?: number
  /**
   * Names an outcome for the summary's counts. Default: a string as itself, a tagged value (an `Exit`, a
   * `Data.TaggedError`) by its `_tag`, anything else with `String`.
   */
  readonly outcomeLabel?: (outcome: Outcome) => string
}

/** What a passing check saw. */
export interface LedgerSummary {
  /** Distinct ids accepted. */
  readonly accepted: number
  /** Outcomes recorded, one per accepted id when the check passes. */
  readonly settled: number
  /** Outcomes counted by their label. */
  readonly outcomes: ReadonlyMap<string, number>
}

/** An id that was settled more than once, with every outcome recorded for it. */
export interface SettledMoreThanOnce<Id, Outcome> {
  /** The id, as given to `settle`. */
  readonly id: Id
  /** Every outcome recorded for it, two or more, in the order `settle` recorded them. */
  readonly outcomes: ReadonlyArray<Outcome>
}

/** How many ids of each list the message shows; the fields hold them all. */
const shownInMessage = 10

const formatId = (id: unknown): string => String(id)

const listed = (ids: ReadonlyArray<string>): string => {
  const shown = ids.slice(0, shownInMessage).join(", ")
  return ids.length > shownInMessage ? `${shown}, … and ${ids.length - shownInMessage} more` : shown
}

/** The ledger's invariant does not hold; each list is complete, the message shows the first few of each. */
export class LedgerViolation<Id = unknown, Outcome = unknown> extends Data.TaggedError("LedgerViolation")<{
  /** Ids accepted more than once. */
  readonly acceptedTwice: ReadonlyArray<Id>
  /** Ids accepted but never settled. */
  readonly lost: ReadonlyArray<Id>
  /** Ids settled more than once, each with all of its outcomes. */
  readonly settledMoreThanOnce: ReadonlyArray<SettledMoreThanOnce<Id, Outcome>>
  /** Ids settled but never accepted. */
  readonly settledWithoutAccept: ReadonlyArray<Id>
  /** Ids the caller said must have been accepted (`checkAgainst`) that never were. */
  readonly neverAccepted: ReadonlyArray<Id>
}> {
  /**
   * Reads `ledger violated: 1 lost: accepted but never settled (job-7); 2 settled more than once (job-1 ×2,
   * job-3 ×3)`: one part per kind of break found, each listing up to 10 ids (`String(id)`).
   */
  override get message() {
    const parts: Array<string> = []
    const add = (ids: ReadonlyArray<string>, what: string) => {
      if (ids.length > 0) parts.push(`${ids.length} ${what} (${listed(ids)})`)
    }
    add(this.acceptedTwice.map(formatId), "accepted more than once")
    add(this.lost.map(formatId), "lost: accepted but never settled")
    add(
      this.settledMoreThanOnce.map((entry) => `${formatId(entry.id)} ×${entry.outcomes.length}`),
      "settled more than once"
    )
    add(this.settledWithoutAccept.map(formatId), "settled without being accepted")
    add(this.neverAccepted.map(formatId), "expected to be accepted but never were")
    return `ledger violated: ${parts.join("; ")}`
  }
}

/**
 * A record of what a system accepted and how each item ended, built by `make`. `Id` keys the items (compared
 * as `Map` keys), `Outcome` is what an item ended as. Recording is synchronous, so any number of fibers may
 * record at once; checking does not clear the record.
 */
export interface Ledger<Id, Outcome> {
  /** Records that the system accepted `id`. */
  readonly accept: (id: Id) => Effect.Effect<void>
  /** Records that `id` reached `outcome`. */
  readonly settle: (id: Id, outcome: Outcome) => Effect.Effect<void>
  /** Every settled id with its outcomes, in the order recorded. */
  readonly outcomes: Effect.Effect<ReadonlyMap<Id, ReadonlyArray<Outcome>>>
  /** Exactly one outcome per accepted id, and none for an id never accepted. */
  readonly check: Effect.Effect<LedgerSummary, LedgerViolation<Id, Outcome>>
  /** `check`, and every id of `expectedIds` was accepted. */
  readonly checkAgainst: (expectedIds: Iterable<Id>) => Effect.Effect<LedgerSummary, LedgerViolation<Id, Outcome>>
}

interface Entry<Outcome> {
  accepted: number
  readonly outcomes: Array<Outcome>
}

const defaultOutcomeLabel = (outcome: unknown): string => {
  if (typeof outcome === "string") return outcome
  if (typeof outcome === "object" && outcome !== null && "_tag" in outcome && typeof outcome._tag === "string") {
    return outcome._tag
  }
  return String(outcome)
}

/**
 * A fresh, empty ledger. A `maxEntries` that is not an integer ≥ 1 is a defect.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Ledger } from "keel/testing"
 *
 * const program = Effect.gen(function*() {
 *   const ledger = yield* Ledger.make<string, "done" | "dead-lettered">()
 *   yield* ledger.accept("job-1")
 *   yield* ledger.accept("job-2")
 *   yield* ledger.settle("job-1", "done")
 *   // Fails with LedgerViolation: job-2 was accepted but never settled (lost).
 *   return yield* ledger.checkAgainst(["job-1", "job-2"])
 * })
 * ```
 */
export const make = <Id, Outcome>(
  options: LedgerOptions<Outcome> = {}
): Effect.Effect<Ledger<Id, Outcome>> =>
  Effect.gen(function*() {
    const maxEntries = options.maxEntries ?? 1_000_000
    yield* Validation.validate("Ledger.make", [
      ["maxEntries", maxEntries, Validation.isIntegerFrom(maxEntries, 1), Validation.integerFrom(1)]
    ])
    const outcomeLabel: (outcome: Outcome) => string = options.outcomeLabel ?? defaultOutcomeLabel
    const entries = new Map<Id, Entry<Outcome>>()

    const entryFor = (id: Id, recording: string): Effect.Effect<Entry<Outcome>> =>
      Effect.suspend(() => {
        const known = entries.get(id)
        if (known !== undefined) return Effect.succeed(known)
        if (entries.size >= maxEntries) {
          return Effect.dieMessage(
            `Ledger: cannot ${recording} ${formatId(id)}: the ledger already holds maxEntries = ${maxEntries} ids`
          )
        }
        const fresh: Entry<Outcome> = { accepted: 0, outcomes: [] }
        entries.set(id, fresh)
        return Effect.succeed(fresh)
      })

    const accept = (id: Id) =>
      Effect.map(entryFor(id, "accept"), (entry) => {
        entry.accepted++
      })

    const settle = (id: Id, outcome: Outcome) =>
      Effect.map(entryFor(id, "settle"), (entry) => {
        entry.outcomes.push(outcome)
      })

    const outcomes = Effect.sync((): ReadonlyMap<Id, ReadonlyArray<Outcome>> => {
      const settled = new Map<Id, ReadonlyArray<Outcome>>()
      for (const [id, entry] of entries) if (entry.outcomes.length > 0) settled.set(id, [...entry.outcomes])
      return settled
    })

    const checkAgainst = (expectedIds: Iterable<Id>) =>
      Effect.suspend((): Effect.Effect<LedgerSummary, LedgerViolation<Id, Outcome>> => {
        const acceptedTwice: Array<Id> = []
        const lost: Array<Id> = []
        const settledMoreThanOnce: Array<SettledMoreThanOnce<Id, Outcome>> = []
        const settledWithoutAccept: Array<Id> = []
        const neverAccepted: Array<Id> = []
        const counts = new Map<string, number>()
        let accepted = 0
        let settled = 0
        for (const [id, entry] of entries) {
          if (entry.accepted > 0) accepted++
          if (entry.accepted > 1) acceptedTwice.push(id)
          if (entry.accepted > 0 && entry.outcomes.length === 0) lost.push(id)
          if (entry.accepted === 0) settledWithoutAccept.push(id)
          if (entry.outcomes.length > 1) settledMoreThanOnce.push({ id, outcomes: [...entry.outcomes] })
          for (const outcome of entry.outcomes) {
            const label = outcomeLabel(outcome)
            counts.set(label, (counts.get(label) ?? 0) + 1)
            settled++
          }
        }
        for (const id of new Set(expectedIds)) {
          if ((entries.get(id)?.accepted ?? 0) === 0) neverAccepted.push(id)
        }
        const violated = acceptedTwice.length + lost.length + settledMoreThanOnce.length +
            settledWithoutAccept.length + neverAccepted.length > 0
        return violated
          ? Effect.fail(
            new LedgerViolation({ acceptedTwice, lost, settledMoreThanOnce, settledWithoutAccept, neverAccepted })
          )
          : Effect.succeed({ accepted, settled, outcomes: counts })
      })

    return { accept, settle, outcomes, check: checkAgainst([]), checkAgainst }
  })
