/**
 * The JobStore contract as one test suite that every backend runs (memory, and Redis against a real
 * redis-server), on TestClock: records carry Clock timestamps, create is idempotent on its key, terminal states
 * are final, a full store evicts the earliest-*finished* record (and its key) or says StoreFull, programming
 * errors die — plus a property test that runs random create/update/remove sequences against a plain Map model
 * of the contract. Each backend's test file adds what only it promises, and checks its `layer` with
 * `expectLayerStore`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, FastCheck as fc, Option, TestClock } from "effect"
import type { Scope } from "effect"
import { PropertyRuns } from "keel/testing"
import type { JobRecord, JobState, JobStoreService } from "../../services/JobStore.js"
import { isTerminal, JobStore, StoreFull } from "../../services/JobStore.js"

export interface StoreBackend {
  /** A fresh, empty store holding at most `capacity` records, in the current Scope. */
  readonly make: (options: { readonly capacity: number }) => Effect.Effect<JobStoreService, never, Scope.Scope>
}

const completed = (result: unknown): JobState => ({ _tag: "Completed", result, attempts: 1 })
const running = (attempt: number): JobState => ({ _tag: "Running", attempt })
const failed = (error: string): JobState => ({ _tag: "Failed", error, attempts: 3 })

const recordOf = (store: JobStoreService, id: string) =>
  Effect.map(store.get(id), Option.getOrThrowWith(() => new Error(`expected a record for ${id}`)))

export const describeJobStoreContract = (backendName: string, backend: StoreBackend): void => {
  const make = (capacity: number) => backend.make({ capacity })

  describe(`JobStore contract: ${backendName}`, () => {
    it.scoped("create, get and update round-trip, with createdAt / updatedAt from the Clock", () =>
      Effect.gen(function*() {
        const store = yield* make(10)
        yield* TestClock.adjust(1_000)
        const { created, record } = yield* store.create({ id: "j1", kind: "email", idempotencyKey: "k1" })
        expect(created).toBe(true)
        expect(record).toEqual({
          id: "j1",
          kind: "email",
          idempotencyKey: "k1",
          state: { _tag: "Queued" },
          createdAt: 1_000,
          updatedAt: 1_000
        })
        expect(yield* store.get("j1")).toEqual(Option.some(record))

        yield* TestClock.adjust(250)
        yield* store.update("j1", running(1))
        expect(yield* recordOf(store, "j1")).toEqual({ ...record, state: running(1), updatedAt: 1_250 })

        yield* TestClock.adjust(500)
        yield* store.update("j1", completed({ sent: 3 }))
        expect(yield* recordOf(store, "j1")).toEqual({ ...record, state: completed({ sent: 3 }), updatedAt: 1_750 })

        const withoutKey = yield* store.create({ id: "j2", kind: "email" })
        expect(withoutKey.record.idempotencyKey).toBeUndefined()
        expect(yield* store.get("missing")).toEqual(Option.none())
      }))

    it.scoped("a create with a key already held returns the stored record with created=false, even when full", () =>
      Effect.gen(function*() {
        const store = yield* make(1)
        const first = yield* store.create({ id: "j1", kind: "email", idempotencyKey: "k1" })
        yield* TestClock.adjust(100)
        yield* store.update("j1", running(1))
        const stored = yield* recordOf(store, "j1")

        const again = yield* store.create({ id: "j2", kind: "other", idempotencyKey: "k1" })
        expect(again).toEqual({ record: stored, created: false })
        expect(again.record.id).toBe(first.record.id)
        expect(yield* store.get("j2")).toEqual(Option.none())
        expect((yield* store.stats).size).toBe(1)
      }))

    it.scoped("remove forgets the record and frees its idempotency key", () =>
      Effect.gen(function*() {
        const store = yield* make(5)
        yield* store.create({ id: "j1", kind: "email", idempotencyKey: "k1" })
        yield* store.remove("j1")
        expect(yield* store.get("j1")).toEqual(Option.none())

        const retried = yield* store.create({ id: "j2", kind: "email", idempotencyKey: "k1" })
        expect(retried.created).toBe(true)
        expect(retried.record.id).toBe("j2")
        // The id is free again too, and removing an unknown id is harmless.
        expect((yield* store.create({ id: "j1", kind: "email" })).created).toBe(true)
        yield* store.remove("never-stored")
        expect((yield* store.stats).size).toBe(2)
      }))

    it.scoped("a terminal state is final: a late Running, or a second outcome, after Completed is ignored", () =>
      Effect.gen(function*() {
        const store = yield* make(5)
        yield* store.create({ id: "j1", kind: "email" })
        yield* TestClock.adjust(10)
        yield* store.update("j1", completed("done"))
        const done = yield* recordOf(store, "j1")

        yield* TestClock.adjust(10)
        yield* store.update("j1", running(2))
        yield* store.update("j1", { _tag: "Queued" })
        yield* store.update("j1", failed("late failure"))
        expect(yield* recordOf(store, "j1")).toEqual(done)
        expect(done.updatedAt).toBe(10)
      }))

    it.scoped("update of an unknown id is a no-op", () =>
      Effect.gen(function*() {
        const store = yield* make(5)
        yield* store.create({ id: "j1", kind: "email" })
        const before = yield* store.stats
        yield* store.update("ghost", completed(1))
        expect(yield* store.get("ghost")).toEqual(Option.none())
        expect(yield* store.stats).toEqual(before)
      }))

    it.scoped("a full store evicts the record that finished earliest (not the earliest created), with its key", () =>
      Effect.gen(function*() {
        const store = yield* make(3)
        yield* store.create({ id: "a", kind: "k", idempotencyKey: "key-a" })
        yield* store.create({ id: "b", kind: "k" })
        yield* store.create({ id: "c", kind: "k" })
        yield* TestClock.adjust(10)
        yield* store.update("b", completed("b"))
        yield* TestClock.adjust(10)
        yield* store.update("a", failed("a broke"))

        yield* store.create({ id: "d", kind: "k" })
        expect(yield* store.get("b")).toEqual(Option.none())
        expect(Option.isSome(yield* store.get("a"))).toBe(true)

        yield* store.create({ id: "e", kind: "k" })
        expect(yield* store.get("a")).toEqual(Option.none())
        expect(Option.isSome(yield* store.get("c"))).toBe(true)

        // a's key went with it: the same key now creates a new job (evicting d, the only finished one).
        yield* store.update("d", completed("d"))
        const reused = yield* store.create({ id: "f", kind: "k", idempotencyKey: "key-a" })
        expect(reused.created).toBe(true)
        expect(reused.record.id).toBe("f")
        expect(yield* store.get("d")).toEqual(Option.none())
        expect((yield* store.stats).size).toBe(3)
      }))

    it.scoped("create fails with StoreFull { capacity } when every record is still active", () =>
      Effect.gen(function*() {
        const store = yield* make(2)
        yield* store.create({ id: "j1", kind: "k" })
        yield* store.create({ id: "j2", kind: "k" })
        yield* store.update("j2", running(1))

        const error = yield* Effect.flip(store.create({ id: "j3", kind: "k", idempotencyKey: "k3" }))
        expect(error).toBeInstanceOf(StoreFull)
        expect(error).toMatchObject({ _tag: "StoreFull", capacity: 2 })
        expect(error.message).toContain("capacity 2")
        expect(yield* store.get("j3")).toEqual(Option.none())

        // Once a job finishes there is room again, and the refused key was never taken.
        yield* store.update("j1", { _tag: "Unfinished", reason: "shutdown", attempts: 0 })
        expect((yield* store.create({ id: "j3", kind: "k", idempotencyKey: "k3" })).created).toBe(true)
      }))

    it.scoped("stats counts the records held by state, with the capacity", () =>
      Effect.gen(function*() {
        const store = yield* make(10)
        for (const id of ["q1", "q2", "r1", "c1", "c2", "f1", "u1", "gone"]) yield* store.create({ id, kind: "k" })
        yield* store.update("r1", running(1))
        yield* store.update("c1", completed(1))
        yield* store.update("c2", running(1))
        yield* store.update("c2", completed(2))
        yield* store.update("f1", failed("boom"))
        yield* store.update("u1", { _tag: "Unfinished", reason: "deadline", attempts: 1 })
        yield* store.remove("gone")
        expect(yield* store.stats).toEqual({
          size: 7,
          capacity: 10,
          byState: { Queued: 2, Running: 1, Completed: 2, Failed: 1, Unfinished: 1 }
        })
      }))

    it.scoped("programming errors die: a non-positive or fractional capacity, and a duplicate id", () =>
      Effect.gen(function*() {
        for (const capacity of [0, -1, 1.5, Number.NaN]) {
          const exit = yield* Effect.exit(Effect.scoped(make(capacity)))
          expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
          const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
          expect(defect).toBeInstanceOf(Cause.IllegalArgumentException)
          expect((defect as Error).message).toMatch(/^\w+JobStore\.make: /)
          expect((defect as Error).message).toContain(`capacity must be an integer ≥ 1 (got ${capacity})`)
        }
        const store = yield* make(2)
        yield* store.create({ id: "j1", kind: "k" })
        const duplicate = yield* Effect.exit(store.create({ id: "j1", kind: "k" }))
        expect(Exit.isFailure(duplicate) && Cause.isDie(duplicate.cause)).toBe(true)
      }))
  })

  describe(`JobStore contract: ${backendName} agrees with a Map model`, () => {
    it.effect.prop(
      "size stays within capacity, get matches the model, StoreFull only when nothing is terminal",
      {
        capacity: fc.integer({ min: 1, max: 4 }),
        // size "max": without it fast-check keeps arrays short, and the store would rarely fill up.
        operations: fc.array(operationArbitrary, { minLength: 10, maxLength: 60, size: "max" })
      },
      ({ capacity, operations }) => Effect.scoped(agreesWithModel(make, capacity, operations)),
      PropertyRuns.fastCheck(20_240_611)
    )
  })
}

/** The capacity `expectLayerStore` expects the layer under test to be built with. */
export const layerCapacity = 3

/** The `JobStore` a backend's layer provides holds records, with the capacity it was given. */
export const expectLayerStore = Effect.gen(function*() {
  const store = yield* JobStore
  yield* store.create({ id: "j1", kind: "k" })
  expect((yield* store.stats).capacity).toBe(layerCapacity)
  expect(Option.map(yield* store.get("j1"), (record) => record.state)).toEqual(Option.some({ _tag: "Queued" }))
})

// ---------------------------------------------------------------------------------------------------------
// Property: random operation sequences agree with a plain Map model of the contract.

const ids = ["j0", "j1", "j2", "j3", "j4", "j5", "j6", "j7"] as const
const keys = ["k0", "k1", "k2"] as const

type Operation =
  | { readonly _tag: "create"; readonly id: string; readonly key: string | undefined }
  | { readonly _tag: "update"; readonly id: string; readonly state: JobState }
  | { readonly _tag: "remove"; readonly id: string }
  | { readonly _tag: "tick"; readonly advanceMs: number }

const stateArbitrary: fc.Arbitrary<JobState> = fc.oneof(
  fc.constant<JobState>({ _tag: "Queued" }),
  fc.integer({ min: 1, max: 3 }).map((attempt): JobState => ({ _tag: "Running", attempt })),
  fc.integer({ min: 0, max: 9 }).map((result): JobState => ({ _tag: "Completed", result, attempts: 1 })),
  fc.constantFrom("boom", "timeout").map((error): JobState => ({ _tag: "Failed", error, attempts: 2 })),
  fc.constant<JobState>({ _tag: "Unfinished", reason: "shutdown", attempts: 1 })
)

const idArbitrary = fc.constantFrom(...ids)

// Time moves in its own, rarer operation: each TestClock.adjust costs a real timer turn.
const operationArbitrary: fc.Arbitrary<Operation> = fc.oneof(
  {
    arbitrary: fc.record({
      _tag: fc.constant("create" as const),
      id: idArbitrary,
      key: fc.option(fc.constantFrom(...keys), { nil: undefined })
    }),
    weight: 4
  },
  { arbitrary: fc.record({ _tag: fc.constant("update" as const), id: idArbitrary, state: stateArbitrary }), weight: 4 },
  { arbitrary: fc.record({ _tag: fc.constant("remove" as const), id: idArbitrary }), weight: 1 },
  {
    arbitrary: fc.record({ _tag: fc.constant("tick" as const), advanceMs: fc.integer({ min: 1, max: 1_000 }) }),
    weight: 1
  }
)

/** The contract, written as plainly as possible: eviction scans for the smallest "finished at" step. */
interface ModelEntry {
  readonly record: JobRecord
  readonly finishedAtStep: number | undefined
}

/** Runs `operations` on a fresh store and checks it against the model after every step. */
const agreesWithModel = (
  make: (capacity: number) => Effect.Effect<JobStoreService, never, Scope.Scope>,
  capacity: number,
  operations: ReadonlyArray<Operation>
) =>
  Effect.gen(function*() {
    const store = yield* make(capacity)
    const model = new Map<string, ModelEntry>()
    let now = 0

    for (const [step, operation] of operations.entries()) {
      switch (operation._tag) {
        case "tick": {
          yield* TestClock.adjust(operation.advanceMs)
          now += operation.advanceMs
          break
        }
        case "create": {
          const existing = operation.key === undefined
            ? undefined
            : [...model.values()].find((entry) => entry.record.idempotencyKey === operation.key)
          if (existing === undefined && model.has(operation.id)) break // a duplicate id is a defect, not tested here
          const outcome = yield* Effect.either(store.create(
            operation.key === undefined
              ? { id: operation.id, kind: "k" }
              : { id: operation.id, kind: "k", idempotencyKey: operation.key }
          ))
          if (existing !== undefined) {
            expect(outcome._tag === "Right" && outcome.right).toEqual({ record: existing.record, created: false })
            break
          }
          const terminal = [...model.values()].filter((entry) => entry.finishedAtStep !== undefined)
          if (outcome._tag === "Left") {
            expect(outcome.left).toMatchObject({ _tag: "StoreFull", capacity })
            expect(model.size).toBe(capacity)
            expect(terminal).toEqual([])
            break
          }
          if (model.size >= capacity) {
            expect(terminal.length).toBeGreaterThan(0)
            const earliest = terminal.reduce((a, b) => a.finishedAtStep! <= b.finishedAtStep! ? a : b)
            model.delete(earliest.record.id)
          }
          const record: JobRecord = {
            id: operation.id,
            kind: "k",
            idempotencyKey: operation.key,
            state: { _tag: "Queued" },
            createdAt: now,
            updatedAt: now
          }
          expect(outcome.right).toEqual({ record, created: true })
          model.set(operation.id, { record, finishedAtStep: undefined })
          break
        }
        case "update": {
          yield* store.update(operation.id, operation.state)
          const entry = model.get(operation.id)
          if (entry !== undefined && entry.finishedAtStep === undefined) {
            model.set(operation.id, {
              record: { ...entry.record, state: operation.state, updatedAt: now },
              finishedAtStep: isTerminal(operation.state) ? step : undefined
            })
          }
          break
        }
        case "remove": {
          yield* store.remove(operation.id)
          model.delete(operation.id)
          break
        }
      }

      // Read all at once: nothing changes meanwhile, and a networked backend answers in one round trip.
      const [stats, records] = yield* Effect.all(
        [store.stats, Effect.forEach(ids, (id) => store.get(id), { concurrency: "unbounded" })],
        { concurrency: "unbounded" }
      )
      expect(stats.size).toBeLessThanOrEqual(capacity)
      expect(stats.size).toBe(model.size)
      for (const [index, id] of ids.entries()) {
        expect(records[index]).toEqual(Option.fromNullable(model.get(id)?.record))
      }
      const byState = { Queued: 0, Running: 0, Completed: 0, Failed: 0, Unfinished: 0 }
      for (const entry of model.values()) byState[entry.record.state._tag]++
      expect(stats.byState).toEqual(byState)
    }
  })
