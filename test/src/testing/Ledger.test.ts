/**
 * Ledger: the "exactly one outcome per accepted item" check that pool and backend properties rely on. A
 * clean run passes with the outcomes counted; each kind of break (accepted twice, lost, settled twice,
 * settled without being accepted, expected but never accepted) is reported with its ids, and all of them
 * at once when several happen; the message stays short however many ids break; the ledger is bounded.
 * A property compares the ledger's verdict with a model written here over random operation sequences.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, FastCheck as fc, Option } from "effect"
import * as Ledger from "../../../src/testing/Ledger.js"
import * as PropertyRuns from "../../../src/testing/PropertyRuns.js"

type Outcome = "completed" | "failed" | "handed-back"

const violationOf = <A, E>(exit: Exit.Exit<A, E>) => {
  expect(Exit.isFailure(exit), "the check should have failed").toBe(true)
  const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  expect(Option.isSome(failure)).toBe(true)
  return Option.getOrThrow(failure)
}

const emptyViolation = {
  acceptedTwice: [],
  lost: [],
  settledMoreThanOnce: [],
  settledWithoutAccept: [],
  neverAccepted: []
}

describe("Ledger", () => {
  it.effect("passes when every accepted item has exactly one outcome, and counts the outcomes", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.accept("job-1")
      yield* ledger.accept("job-2")
      yield* ledger.settle("job-2", "failed")
      yield* ledger.accept("job-3")
      yield* ledger.settle("job-1", "completed")
      yield* ledger.settle("job-3", "completed")

      const summary = yield* ledger.check
      expect(summary.accepted).toBe(3)
      expect(summary.settled).toBe(3)
      expect(summary.outcomes).toEqual(new Map([["completed", 2], ["failed", 1]]))
      expect(yield* ledger.outcomes).toEqual(
        new Map([["job-1", ["completed"]], ["job-2", ["failed"]], ["job-3", ["completed"]]])
      )
    }))

  it.effect("an outcome recorded before its acceptance is not a violation", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<number, Outcome>()
      yield* ledger.settle(7, "completed")
      yield* ledger.accept(7)
      expect((yield* ledger.check).accepted).toBe(1)
    }))

  it.effect("an item accepted twice is reported", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.accept("job-1")
      yield* ledger.accept("job-1")
      yield* ledger.settle("job-1", "completed")
      const violation = violationOf(yield* Effect.exit(ledger.check))
      expect(violation).toMatchObject({ ...emptyViolation, acceptedTwice: ["job-1"] })
      expect(violation.message).toBe("ledger violated: 1 accepted more than once (job-1)")
    }))

  it.effect("an item accepted but never settled is reported as lost", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.accept("job-1")
      yield* ledger.accept("job-2")
      yield* ledger.settle("job-1", "completed")
      const violation = violationOf(yield* Effect.exit(ledger.check))
      expect(violation).toMatchObject({ ...emptyViolation, lost: ["job-2"] })
      expect(violation.message).toBe("ledger violated: 1 lost: accepted but never settled (job-2)")
    }))

  it.effect("an item settled more than once is reported with all its outcomes", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.accept("job-1")
      yield* ledger.settle("job-1", "failed")
      yield* ledger.settle("job-1", "completed")
      const violation = violationOf(yield* Effect.exit(ledger.check))
      expect(violation).toMatchObject({
        ...emptyViolation,
        settledMoreThanOnce: [{ id: "job-1", outcomes: ["failed", "completed"] }]
      })
      expect(violation.message).toBe("ledger violated: 1 settled more than once (job-1 ×2)")
    }))

  it.effect("an item settled without ever being accepted is reported", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.settle("ghost", "completed")
      const violation = violationOf(yield* Effect.exit(ledger.check))
      expect(violation).toMatchObject({ ...emptyViolation, settledWithoutAccept: ["ghost"] })
      expect(violation.message).toBe("ledger violated: 1 settled without being accepted (ghost)")
    }))

  it.effect("checkAgainst reports the ids that had to be accepted and never were", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.accept("job-1")
      yield* ledger.settle("job-1", "completed")
      expect((yield* ledger.checkAgainst(["job-1"])).accepted).toBe(1)

      const violation = violationOf(yield* Effect.exit(ledger.checkAgainst(["job-1", "job-2", "job-2"])))
      expect(violation).toMatchObject({ ...emptyViolation, neverAccepted: ["job-2"] })
      expect(violation.message).toBe("ledger violated: 1 expected to be accepted but never were (job-2)")
    }))

  it.effect("every kind of violation is reported at once", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>()
      yield* ledger.accept("twice")
      yield* ledger.accept("twice")
      yield* ledger.settle("twice", "completed")
      yield* ledger.accept("lost")
      yield* ledger.accept("double")
      yield* ledger.settle("double", "completed")
      yield* ledger.settle("double", "handed-back")
      yield* ledger.settle("ghost", "failed")
      const violation = violationOf(yield* Effect.exit(ledger.checkAgainst(["missing"])))
      expect(violation).toMatchObject({
        acceptedTwice: ["twice"],
        lost: ["lost"],
        settledMoreThanOnce: [{ id: "double", outcomes: ["completed", "handed-back"] }],
        settledWithoutAccept: ["ghost"],
        neverAccepted: ["missing"]
      })
      expect(violation.message).toBe(
        "ledger violated: 1 accepted more than once (twice); 1 lost: accepted but never settled (lost); " +
          "1 settled more than once (double ×2); 1 settled without being accepted (ghost); " +
          "1 expected to be accepted but never were (missing)"
      )
    }))

  it.effect("the message names the first ten ids of a list and counts the rest; the fields hold them all", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<number, Outcome>()
      yield* Effect.forEach(Array.from({ length: 25 }, (_, index) => index), ledger.accept, { discard: true })
      const violation = violationOf(yield* Effect.exit(ledger.check))
      expect(violation.lost).toHaveLength(25)
      expect(violation.message).toBe(
        "ledger violated: 25 lost: accepted but never settled (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … and 15 more)"
      )
    }))

  it.effect("tagged outcomes (an Exit) are counted by their tag unless a label is given", () =>
    Effect.gen(function*() {
      const byTag = yield* Ledger.make<number, Exit.Exit<number, string>>()
      const labelled = yield* Ledger.make<number, Exit.Exit<number, string>>({
        outcomeLabel: (exit) => (Exit.isSuccess(exit) ? "ok" : "dead-lettered")
      })
      for (const ledger of [byTag, labelled]) {
        yield* ledger.accept(1)
        yield* ledger.accept(2)
        yield* ledger.settle(1, Exit.succeed(1))
        yield* ledger.settle(2, Exit.fail("boom"))
      }
      expect((yield* byTag.check).outcomes).toEqual(new Map([["Success", 1], ["Failure", 1]]))
      expect((yield* labelled.check).outcomes).toEqual(new Map([["ok", 1], ["dead-lettered", 1]]))
    }))

  it.effect("past maxEntries distinct ids, recording another one dies and says why", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.make<string, Outcome>({ maxEntries: 2 })
      yield* ledger.accept("job-1")
      yield* ledger.accept("job-2")
      // Ids already held can still be recorded.
      yield* ledger.accept("job-2")
      yield* ledger.settle("job-1", "completed")

      for (const recording of [ledger.accept("job-3"), ledger.settle("job-3", "completed")]) {
        const exit = yield* Effect.exit(recording)
        expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
        if (Exit.isFailure(exit)) {
          expect(Cause.pretty(exit.cause)).toContain("the ledger already holds maxEntries = 2 ids")
        }
      }
      expect((yield* ledger.outcomes).size).toBe(1)
    }))

  it.effect("a maxEntries that is not a positive integer is refused", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Ledger.make({ maxEntries: 0 }))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }))
})

type Operation =
  | { readonly kind: "accept"; readonly id: number }
  | { readonly kind: "settle"; readonly id: number; readonly outcome: Outcome }

const outcomeArbitrary = fc.constantFrom<Outcome>("completed", "failed", "handed-back")

const operationArbitrary: fc.Arbitrary<Operation> = fc.oneof(
  fc.record({ kind: fc.constant("accept" as const), id: fc.integer({ min: 0, max: 9 }) }),
  fc.record({ kind: fc.constant("settle" as const), id: fc.integer({ min: 0, max: 9 }), outcome: outcomeArbitrary })
)

/**
 * A clean history (items 0…n-1, each accepted once and settled once) with up to three stray operations
 * mixed in, all in a random order: clean runs and every kind of break both come up often.
 */
const historyArbitrary: fc.Arbitrary<ReadonlyArray<Operation>> = fc
  .record({
    items: fc.array(
      fc.record({ outcome: outcomeArbitrary, acceptAt: fc.nat(100), settleAt: fc.nat(100) }),
      { maxLength: 8 }
    ),
    strays: fc.array(fc.record({ operation: operationArbitrary, at: fc.nat(100) }), { maxLength: 3 })
  })
  .map(({ items, strays }) =>
    [
      ...items.flatMap((item, id) => [
        { at: item.acceptAt, operation: { kind: "accept" as const, id } },
        { at: item.settleAt, operation: { kind: "settle" as const, id, outcome: item.outcome } }
      ]),
      ...strays
    ].sort((left, right) => left.at - right.at).map((timed): Operation => timed.operation)
  )

/** What the ledger must say, computed by counting per id. */
const modelVerdict = (operations: ReadonlyArray<Operation>, expectedIds: ReadonlyArray<number>) => {
  const accepts = new Map<number, number>()
  const outcomes = new Map<number, Array<Outcome>>()
  for (const operation of operations) {
    if (operation.kind === "accept") accepts.set(operation.id, (accepts.get(operation.id) ?? 0) + 1)
    else outcomes.set(operation.id, [...(outcomes.get(operation.id) ?? []), operation.outcome])
  }
  const ids = [...new Set(operations.map((operation) => operation.id))].sort((a, b) => a - b)
  const acceptsOf = (id: number) => accepts.get(id) ?? 0
  const outcomesOf = (id: number) => outcomes.get(id) ?? []
  return {
    acceptedTwice: ids.filter((id) => acceptsOf(id) > 1),
    lost: ids.filter((id) => acceptsOf(id) > 0 && outcomesOf(id).length === 0),
    settledMoreThanOnce: ids.filter((id) => outcomesOf(id).length > 1).map((id) => ({ id, outcomes: outcomesOf(id) })),
    settledWithoutAccept: ids.filter((id) => acceptsOf(id) === 0),
    neverAccepted: [...new Set(expectedIds)].sort((a, b) => a - b).filter((id) => acceptsOf(id) === 0),
    accepted: ids.filter((id) => acceptsOf(id) > 0).length,
    settled: operations.filter((operation) => operation.kind === "settle").length
  }
}

const sortedById = <T extends { readonly id: number }>(entries: ReadonlyArray<T>) =>
  [...entries].sort((left, right) => left.id - right.id)
const sorted = (ids: ReadonlyArray<number>) => [...ids].sort((a, b) => a - b)

describe("Ledger properties", () => {
  it.effect.prop(
    "the verdict matches a per-id count of accepts and outcomes, whatever the order of operations",
    {
      operations: historyArbitrary,
      expectedIds: fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 2 })
    },
    ({ expectedIds, operations }) =>
      Effect.gen(function*() {
        const ledger = yield* Ledger.make<number, Outcome>()
        for (const operation of operations) {
          yield* operation.kind === "accept"
            ? ledger.accept(operation.id)
            : ledger.settle(operation.id, operation.outcome)
        }
        const model = modelVerdict(operations, expectedIds)
        const exit = yield* Effect.exit(ledger.checkAgainst(expectedIds))
        const clean = model.acceptedTwice.length + model.lost.length + model.settledMoreThanOnce.length +
            model.settledWithoutAccept.length + model.neverAccepted.length === 0
        if (clean) {
          expect(Exit.isSuccess(exit)).toBe(true)
          if (Exit.isSuccess(exit)) {
            expect(exit.value.accepted).toBe(model.accepted)
            expect(exit.value.settled).toBe(model.settled)
            expect([...exit.value.outcomes.values()].reduce((sum, count) => sum + count, 0)).toBe(model.settled)
          }
          return
        }
        const violation = violationOf(exit)
        expect({
          acceptedTwice: sorted(violation.acceptedTwice),
          lost: sorted(violation.lost),
          settledMoreThanOnce: sortedById(violation.settledMoreThanOnce),
          settledWithoutAccept: sorted(violation.settledWithoutAccept),
          neverAccepted: sorted(violation.neverAccepted)
        }).toEqual({
          acceptedTwice: model.acceptedTwice,
          lost: model.lost,
          settledMoreThanOnce: model.settledMoreThanOnce,
          settledWithoutAccept: model.settledWithoutAccept,
          neverAccepted: model.neverAccepted
        })
      }),
    PropertyRuns.fastCheck(20261210)
  )
})
