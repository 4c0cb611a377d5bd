/**
 * The embedded JobStore against the JobStore contract (test/services/JobStoreContract.ts) on TestClock, plus
 * what only the memory backend promises: a store is its process's own — two stores share no record and no
 * idempotency key, even with the same capacity and ids — and `layer` provides the JobStore service.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as MemoryJobStore from "../../../layers/memory/JobStore.js"
import { describeJobStoreContract, expectLayerStore, layerCapacity } from "../../services/JobStoreContract.js"

describeJobStoreContract("memory", { make: MemoryJobStore.make })

describe("MemoryJobStore", () => {
  it.effect("two stores share nothing: a record and its key live only in the store that created them", () =>
    Effect.gen(function*() {
      const first = yield* MemoryJobStore.make({ capacity: 2 })
      const second = yield* MemoryJobStore.make({ capacity: 2 })
      const created = yield* first.create({ id: "j1", kind: "email", idempotencyKey: "k1" })
      expect(yield* second.get("j1")).toEqual(Option.none())
      const elsewhere = yield* second.create({ id: "j2", kind: "email", idempotencyKey: "k1" })
      expect(elsewhere.created).toBe(true)
      expect(elsewhere.record.id).toBe("j2")
      yield* second.update("j1", { _tag: "Running", attempt: 1 })
      expect(yield* first.get("j1")).toEqual(Option.some(created.record))
      expect((yield* first.stats).size).toBe(1)
      expect((yield* second.stats).size).toBe(1)
    }))

  it.effect("layer provides the JobStore contract", () =>
    expectLayerStore.pipe(Effect.provide(MemoryJobStore.layer({ capacity: layerCapacity }))))
})
