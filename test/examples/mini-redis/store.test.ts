/**
 * The keyspace of the mini-redis example: random sequences of SET (with EX-style deadlines and NX/XX), GET,
 * DEL, EXISTS, INCR, PEXPIREAT, PTTL, active expiry, FLUSHDB and time moving on TestClock agree with a plain
 * Map model in which a key past its deadline is simply absent; active expiry removes at most `maxKeys`
 * keys per call, earliest deadlines first, and ignores deadlines that were replaced; INCR follows Redis's
 * int64 rules and wording; and the deadline heap stays bounded however often deadlines move.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, FastCheck as fc, TestClock } from "effect"
import { IncrementOverflow, NotAnInteger, Store } from "../../../examples/mini-redis/store.js"
import { PropertyRuns } from "keel/testing"


const maxInt64 = 9223372036854775807n
const minInt64 = -9223372036854775808n

// ---------------------------------------------------------------------------------------------------------
// The model: a key whose deadline is at or before `now` is absent.

interface ModelEntry {
  readonly value: string
  readonly expiresAt: number | undefined
}

class Model {
  readonly entries = new Map<string, ModelEntry>()

  live(key: string, now: number): ModelEntry | undefined {
    const entry = this.entries.get(key)
    return entry === undefined || (entry.expiresAt !== undefined && entry.expiresAt < now) ? undefined : entry
  }

  liveCount(now: number): number {
    return [...this.entries.keys()].filter((key) => this.live(key, now) !== undefined).length
  }

  set(key: string, value: string, now: number, expiresAt: number | undefined, condition: "NX" | "XX" | undefined) {
    const present = this.live(key, now) !== undefined
    if ((condition === "NX" && present) || (condition === "XX" && !present)) return false
    this.entries.set(key, { value, expiresAt })
    return true
  }

  delete(keys: ReadonlyArray<string>, now: number): number {
    let removed = 0
    for (const key of keys) {
      if (this.live(key, now) === undefined) continue
      this.entries.delete(key)
      removed++
    }
    return removed
  }

  exists(keys: ReadonlyArray<string>, now: number): number {
    return keys.filter((key) => this.live(key, now) !== undefined).length
  }

  increment(key: string, now: number): bigint | "NotAnInteger" | "IncrementOverflow" {
    const entry = this.live(key, now)
    let current = 0n
    if (entry !== undefined) {
      const parsed = canonicalInt64(entry.value)
      if (parsed === undefined) return "NotAnInteger"
      current = parsed
    }
    if (current + 1n > maxInt64) return "IncrementOverflow"
    this.entries.set(key, { value: String(current + 1n), expiresAt: entry?.expiresAt })
    return current + 1n
  }

  expireAt(key: string, at: number, now: number): boolean {
    const entry = this.live(key, now)
    if (entry === undefined) return false
    if (at <= now) this.entries.delete(key)
    else this.entries.set(key, { ...entry, expiresAt: at })
    return true
  }

  timeToLive(key: string, now: number): number {
    const entry = this.live(key, now)
    if (entry === undefined) return -2
    return entry.expiresAt === undefined ? -1 : entry.expiresAt - now
  }
}

/** The value as an int64 when it is written exactly as Redis would print it, else undefined. */
const canonicalInt64 = (text: string): bigint | undefined => {
  let value: bigint
  try {
    value = BigInt(text)
  } catch {
    return undefined
  }
  if (value.toString() !== text || value > maxInt64 || value < minInt64) return undefined
  return value
}

// ---------------------------------------------------------------------------------------------------------
// Operations

type Operation =
  | {
    readonly _tag: "set"
    readonly key: string
    readonly value: string
    readonly expiresInMs: number | undefined
    readonly condition: "NX" | "XX" | undefined
  }
  | { readonly _tag: "get"; readonly key: string }
  | { readonly _tag: "delete"; readonly keys: ReadonlyArray<string> }
  | { readonly _tag: "exists"; readonly keys: ReadonlyArray<string> }
  | { readonly _tag: "increment"; readonly key: string }
  | { readonly _tag: "expireAt"; readonly key: string; readonly offsetMs: number }
  | { readonly _tag: "timeToLive"; readonly key: string }
  | { readonly _tag: "purgeExpired"; readonly maxKeys: number }
  | { readonly _tag: "clear" }
  | { readonly _tag: "advance"; readonly ms: number }

const valueArbitrary: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: -5, max: 5 }).map(String),
  fc.integer().map(String),
  fc.bigInt({ min: maxInt64 - 2n, max: maxInt64 + 1n }).map(String),
  fc.bigInt({ min: minInt64 - 1n, max: minInt64 + 1n }).map(String),
  fc.constantFrom("abc", "", "01", "-0", "+1", " 1", "1 ", "1.5", "0x1", "1e3", "99999999999999999999")
)

const operationArbitrary = (keys: ReadonlyArray<string>): fc.Arbitrary<Operation> => {
  const key = fc.constantFrom(...keys)
  const someKeys = fc.array(key, { minLength: 1, maxLength: 3 })
  return fc.oneof(
    {
      arbitrary: fc.record({
        _tag: fc.constant("set" as const),
        key,
        value: valueArbitrary,
        expiresInMs: fc.option(fc.integer({ min: 1, max: 50 }), { nil: undefined }),
        condition: fc.option(fc.constantFrom("NX" as const, "XX" as const), { nil: undefined })
      }),
      weight: 5
    },
    { arbitrary: fc.record({ _tag: fc.constant("get" as const), key }), weight: 2 },
    { arbitrary: fc.record({ _tag: fc.constant("delete" as const), keys: someKeys }), weight: 1 },
    { arbitrary: fc.record({ _tag: fc.constant("exists" as const), keys: someKeys }), weight: 2 },
    { arbitrary: fc.record({ _tag: fc.constant("increment" as const), key }), weight: 3 },
    {
      arbitrary: fc.record({
        _tag: fc.constant("expireAt" as const),
        key,
        offsetMs: fc.integer({ min: -10, max: 50 })
      }),
      weight: 3
    },
    { arbitrary: fc.record({ _tag: fc.constant("timeToLive" as const), key }), weight: 2 },
    {
      arbitrary: fc.record({ _tag: fc.constant("purgeExpired" as const), maxKeys: fc.integer({ min: 1, max: 3 }) }),
      weight: 2
    },
    { arbitrary: fc.constant({ _tag: "clear" as const }), weight: 1 },
    { arbitrary: fc.record({ _tag: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 30 }) }), weight: 4 }
  )
}

const scenarioArbitrary = fc.integer({ min: 3, max: 5 }).chain((keyCount) => {
  const keys = Array.from({ length: keyCount }, (_, index) => `k${index}`)
  return fc.record({
    keys: fc.constant(keys),
    operations: fc.array(operationArbitrary(keys), { minLength: 1, maxLength: 60 })
  })
})

const incrementOutcome = (result: bigint | NotAnInteger | IncrementOverflow) =>
  typeof result === "bigint" ? result : result._tag

/** Applies `operation` to the store and checks its result against the model's (which it does not change). */
const checkStore = (store: Store, model: Model, operation: Operation, now: number, expected: unknown) => {
  switch (operation._tag) {
    case "set":
      expect(store.set(
        operation.key,
        Buffer.from(operation.value),
        now,
        {
          ...(operation.expiresInMs === undefined ? {} : { expiresAt: now + operation.expiresInMs }),
          ...(operation.condition === undefined ? {} : { condition: operation.condition })
        }
      )).toBe(expected)
      break
    case "get":
      expect(store.get(operation.key, now)?.toString()).toBe(expected)
      break
    case "delete":
      expect(store.delete(operation.keys, now)).toBe(expected)
      break
    case "exists":
      expect(store.exists(operation.keys, now)).toBe(expected)
      break
    case "increment":
      expect(incrementOutcome(store.increment(operation.key, now))).toBe(expected)
      break
    case "expireAt":
      expect(store.expireAt(operation.key, now + operation.offsetMs, now)).toBe(expected)
      break
    case "timeToLive":
      expect(store.timeToLive(operation.key, now)).toBe(expected)
      break
    case "purgeExpired": {
      // Every key held but not live is past its deadline, so exactly that many are due (up to maxKeys).
      const before = store.size
      const removed = store.purgeExpired(now, operation.maxKeys)
      expect(removed).toBe(Math.min(operation.maxKeys, before - model.liveCount(now)))
      expect(store.size).toBe(before - removed)
      break
    }
    case "clear":
      store.clear()
      expect(store.size).toBe(0)
      break
    case "advance":
      break
  }
}

/** Applies `operation` to the model; returns the result the store must give. */
const applyModel = (model: Model, operation: Operation, now: number): unknown => {
  switch (operation._tag) {
    case "set":
      return model.set(
        operation.key,
        operation.value,
        now,
        operation.expiresInMs === undefined ? undefined : now + operation.expiresInMs,
        operation.condition
      )
    case "get":
      return model.live(operation.key, now)?.value
    case "delete":
      return model.delete(operation.keys, now)
    case "exists":
      return model.exists(operation.keys, now)
    case "increment":
      return model.increment(operation.key, now)
    case "expireAt":
      return model.expireAt(operation.key, now + operation.offsetMs, now)
    case "timeToLive":
      return model.timeToLive(operation.key, now)
    case "clear":
      model.entries.clear()
      return undefined
    case "purgeExpired":
    case "advance":
      return undefined
  }
}

/** Every key reads as in the model; after purging everything due, the store holds exactly the live keys. */
const checkAllKeys = (store: Store, model: Model, keys: ReadonlyArray<string>, now: number) => {
  expect(store.size).toBeGreaterThanOrEqual(model.liveCount(now))
  for (const key of keys) {
    expect(store.get(key, now)?.toString()).toBe(model.live(key, now)?.value)
    expect(store.timeToLive(key, now)).toBe(model.timeToLive(key, now))
  }
  store.purgeExpired(now, 1_000_000)
  expect(store.size).toBe(model.liveCount(now))
}

describe("Store agrees with a Map model", () => {
  // Two stores get the same operations: `observed` is read in full after every step (which expires keys
  // lazily as it reads them), `unobserved` only through the operations themselves, so it also meets keys
  // that are past their deadline but still held.
  it.effect.prop(
    "every operation's result, every key's value and TTL, and the live key count agree, on TestClock",
    { scenario: scenarioArbitrary },
    ({ scenario: { keys, operations } }) =>
      Effect.gen(function*() {
        const observed = new Store()
        const unobserved = new Store()
        const model = new Model()

        for (const operation of operations) {
          if (operation._tag === "advance") yield* TestClock.adjust(operation.ms)
          const now = yield* Clock.currentTimeMillis
          const expected = applyModel(model, operation, now)
          checkStore(observed, model, operation, now, expected)
          checkStore(unobserved, model, operation, now, expected)

          checkAllKeys(observed, model, keys, now)
          expect(unobserved.size).toBeGreaterThanOrEqual(model.liveCount(now))
        }
        checkAllKeys(unobserved, model, keys, yield* Clock.currentTimeMillis)
      }),
    PropertyRuns.fastCheck(20_261_301)
  )
})

// ---------------------------------------------------------------------------------------------------------
// Active expiry, PEXPIREAT and INCR

/** Whether `store` still holds `key`: read at time 0, before every deadline used here, so nothing expires. */
const holds = (store: Store, key: string) => store.get(key, 0) !== undefined

describe("Store", () => {
  it("purgeExpired removes at most maxKeys keys per call, earliest deadlines first, and counts them", () => {
    const store = new Store()
    const deadlines = { c: 30, a: 10, e: 50, b: 20, d: 40, later: 1_000 }
    for (const [key, at] of Object.entries(deadlines)) store.set(key, Buffer.from(key), 0, { expiresAt: at })
    store.set("forever", Buffer.from("x"), 0)

    expect(store.purgeExpired(100, 2)).toBe(2)
    expect(["a", "b", "c", "d", "e"].map((key) => holds(store, key))).toEqual([false, false, true, true, true])
    expect(store.size).toBe(5)

    expect(store.purgeExpired(100, 1)).toBe(1)
    expect(holds(store, "c")).toBe(false)
    expect(holds(store, "d")).toBe(true)

    expect(store.purgeExpired(100, 10)).toBe(2)
    expect(store.purgeExpired(100, 10)).toBe(0)
    expect(holds(store, "later")).toBe(true)
    expect(holds(store, "forever")).toBe(true)
    expect(store.size).toBe(2)
  })

  it("purgeExpired only removes keys past their deadline (a key lives through its deadline, as in Redis)", () => {
    const store = new Store()
    store.set("a", Buffer.from("1"), 0, { expiresAt: 10 })
    store.set("b", Buffer.from("2"), 0, { expiresAt: 11 })
    expect(store.purgeExpired(10, 10)).toBe(0)
    expect(store.purgeExpired(11, 10)).toBe(1)
    expect(holds(store, "b")).toBe(true)
  })

  it("a key whose deadline moved later, or was cleared, is not purged at its old deadline", () => {
    const store = new Store()
    store.set("moved", Buffer.from("1"), 0, { expiresAt: 10 })
    store.set("reset", Buffer.from("2"), 0, { expiresAt: 10 })
    store.set("cleared", Buffer.from("3"), 0, { expiresAt: 10 })
    expect(store.expireAt("moved", 100, 0)).toBe(true)
    expect(store.set("reset", Buffer.from("2b"), 0, { expiresAt: 60 })).toBe(true)
    expect(store.set("cleared", Buffer.from("3b"), 0)).toBe(true)

    expect(store.purgeExpired(50, 10)).toBe(0)
    expect(store.size).toBe(3)
    expect(store.timeToLive("moved", 50)).toBe(50)
    expect(store.timeToLive("reset", 50)).toBe(10)
    expect(store.timeToLive("cleared", 50)).toBe(-1)

    expect(store.purgeExpired(60, 10)).toBe(0)
    expect(store.purgeExpired(61, 10)).toBe(1)
    expect(holds(store, "reset")).toBe(false)
    expect(store.purgeExpired(101, 10)).toBe(1)
    expect(holds(store, "moved")).toBe(false)
    expect(store.get("cleared", 1_000_000)?.toString()).toBe("3b")
  })

  it("a key deleted and set again without a deadline is not purged at the old one", () => {
    const store = new Store()
    store.set("k", Buffer.from("old"), 0, { expiresAt: 10 })
    expect(store.delete(["k"], 0)).toBe(1)
    store.set("k", Buffer.from("new"), 0)
    expect(store.purgeExpired(11, 10)).toBe(0)
    expect(store.get("k", 11)?.toString()).toBe("new")
  })

  it("expireAt with a deadline already past deletes the key and returns true; on a missing key, false", () => {
    const store = new Store()
    store.set("past", Buffer.from("1"), 0)
    store.set("now", Buffer.from("2"), 0)
    store.set("future", Buffer.from("3"), 0)
    expect(store.expireAt("past", 5, 10)).toBe(true)
    expect(store.expireAt("now", 10, 10)).toBe(true)
    expect(store.expireAt("future", 11, 10)).toBe(true)
    expect(store.get("past", 10)).toBeUndefined()
    expect(store.get("now", 10)).toBeUndefined()
    expect(store.timeToLive("future", 10)).toBe(1)
    expect(store.size).toBe(1)

    expect(store.expireAt("missing", 100, 10)).toBe(false)
    expect(store.expireAt("past", 100, 10)).toBe(false)
    // Past its deadline but not yet purged: gone all the same.
    expect(store.expireAt("future", 100, 12)).toBe(false)
    expect(store.size).toBe(0)
  })

  it("INCR counts an absent key from 0 and keeps the deadline; SET without expiry clears it", () => {
    const store = new Store()
    expect(store.increment("n", 0)).toBe(1n)
    expect(store.timeToLive("n", 0)).toBe(-1)
    expect(store.expireAt("n", 100, 0)).toBe(true)
    expect(store.increment("n", 40)).toBe(2n)
    expect(store.timeToLive("n", 40)).toBe(60)
    expect(store.get("n", 40)?.toString()).toBe("2")
    store.set("n", Buffer.from("7"), 40)
    expect(store.timeToLive("n", 40)).toBe(-1)
    expect(store.increment("n", 200)).toBe(8n)
    expect(store.set("m", Buffer.from("-1"), 0)).toBe(true)
    expect(store.increment("m", 0)).toBe(0n)
  })

  it("INCR on a value that is not a canonical decimal int64 is NotAnInteger, and changes nothing", () => {
    const store = new Store()
    for (const value of ["abc", "01", "9223372036854775808", "-9223372036854775809", "", "-0", "+1", " 1"]) {
      store.set("k", Buffer.from(value), 0)
      const result = store.increment("k", 0)
      expect(result).toBeInstanceOf(NotAnInteger)
      expect((result as NotAnInteger).message).toBe("value is not an integer or out of range")
      expect(store.get("k", 0)?.toString()).toBe(value)
    }
  })

  it("INCR on 2^63 - 1 is IncrementOverflow, and changes nothing; from -2^63 it counts up", () => {
    const store = new Store()
    store.set("k", Buffer.from("9223372036854775807"), 0)
    const result = store.increment("k", 0)
    expect(result).toBeInstanceOf(IncrementOverflow)
    expect((result as IncrementOverflow).message).toBe("increment or decrement would overflow")
    expect(store.get("k", 0)?.toString()).toBe("9223372036854775807")

    store.set("k", Buffer.from("9223372036854775806"), 0)
    expect(store.increment("k", 0)).toBe(maxInt64)
    store.set("k", Buffer.from("-9223372036854775808"), 0)
    expect(store.increment("k", 0)).toBe(minInt64 + 1n)
  })
})

// ---------------------------------------------------------------------------------------------------------
// The deadline heap stays bounded.

describe("Store deadline bookkeeping", () => {
  it("10,000 moving deadlines on 10 keys: only the latest counts, and the heap stays bounded", () => {
    const store = new Store()
    const keys = Array.from({ length: 10 }, (_, index) => `k${index}`)
    for (const key of keys) store.set(key, Buffer.from(key), 0)
    const heapLength = () => (store as any).heap.length as number

    let maxHeap = 0
    for (let round = 0; round < 10_000; round++) {
      expect(store.expireAt(keys[round % keys.length]!, 1_000 + round, 0)).toBe(true)
      maxHeap = Math.max(maxHeap, heapLength())
    }
    expect(heapLength()).toBeLessThan(2 * keys.length + 65)
    expect(maxHeap).toBeLessThan(2 * keys.length + 65)

    // Key i's latest deadline is 1_000 + 9_990 + i.
    const latest = (index: number) => 10_990 + index
    expect(store.purgeExpired(latest(0), Infinity)).toBe(0)
    expect(store.size).toBe(keys.length)
    for (const [index, key] of keys.entries()) {
      expect(store.timeToLive(key, 0)).toBe(latest(index))
      expect(store.purgeExpired(latest(index) + 1, Infinity)).toBe(1)
      expect(store.size).toBe(keys.length - index - 1)
    }
    expect(heapLength()).toBe(0)
  })
})
