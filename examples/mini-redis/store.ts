/**
 * The keyspace of mini-redis: string values with optional expiry, as Redis keeps them.
 *
 * Operations are synchronous and take the current time (Clock milliseconds) from the caller, which reads
 * the Clock once per batch of pipelined commands, so the store itself needs no Effect and expiry follows
 * `TestClock` in tests. Expiry works as in Redis: a key lives until its deadline, that instant included, and
 * is gone lazily (a key past its deadline is gone the moment it is touched) and actively (`purgeExpired` removes keys past their deadline, a bounded number per call, so a
 * server can run it on a tick without ever pausing long). Deadlines sit in a min-heap; an entry made stale
 * by a new deadline or a removed key is skipped when it surfaces, and the heap is rebuilt once stale entries
 * outnumber live ones, so memory stays proportional to the keys with a deadline.
 */
import * as Data from "effect/Data"

/** `INCR` on a value that is not a 64-bit integer in decimal, as Redis words it. */
export class NotAnInteger extends Data.TaggedError("NotAnInteger")<{}> {
  override get message() {
    return "value is not an integer or out of range"
  }
}

/** `INCR` past 2^63 - 1, as Redis words it. */
export class IncrementOverflow extends Data.TaggedError("IncrementOverflow")<{}> {
  override get message() {
    return "increment or decrement would overflow"
  }
}

export interface SetOptions {
  /** Clock milliseconds after which the key is gone; none keeps no deadline (and clears an old one). */
  readonly expiresAt?: number
  /** NX: only when the key is absent; XX: only when it is present. */
  readonly condition?: "NX" | "XX"
}

interface Entry {
  value: Buffer
  /** Clock milliseconds, or undefined for no deadline. */
  expiresAt: number | undefined
}

interface Deadline {
  readonly key: string
  readonly at: number
}

const maxInt64 = 9223372036854775807n
const minInt64 = -9223372036854775808n

export class Store {
  private readonly entries = new Map<string, Entry>()
  private heap: Array<Deadline> = []
  /** Keys with a deadline; heap entries beyond these are stale. */
  private withDeadline = 0

  /** Keys held, expired ones not yet purged included (as Redis's DBSIZE counts them). */
  get size(): number {
    return this.entries.size
  }

  /** Keys with a deadline (INFO's `expires`). */
  get expiring(): number {
    return this.withDeadline
  }

  /** The live entry for `key`, removing it first if its deadline has passed. */
  private live(key: string, now: number): Entry | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt !== undefined && entry.expiresAt < now) {
      this.remove(key, entry)
      return undefined
    }
    return entry
  }

  private remove(key: string, entry: Entry): void {
    this.entries.delete(key)
    if (entry.expiresAt !== undefined) this.withDeadline--
  }

  private setDeadline(key: string, entry: Entry, at: number | undefined): void {
    if (entry.expiresAt === undefined && at !== undefined) this.withDeadline++
    if (entry.expiresAt !== undefined && at === undefined) this.withDeadline--
    entry.expiresAt = at
    if (at === undefined) return
    this.push({ key, at })
    if (this.heap.length > 2 * this.withDeadline + 64) this.rebuildHeap()
  }

  get(key: string, now: number): Buffer | undefined {
    return this.live(key, now)?.value
  }

  /** SET; false when NX/XX prevented it. */
  set(key: string, value: Buffer, now: number, options: SetOptions = {}): boolean {
    const existing = this.live(key, now)
    if (options.condition === "NX" && existing !== undefined) return false
    if (options.condition === "XX" && existing === undefined) return false
    const entry = existing ?? { value, expiresAt: undefined }
    entry.value = value
    if (existing === undefined) this.entries.set(key, entry)
    this.setDeadline(key, entry, options.expiresAt)
    return true
  }

  /** DEL: how many of `keys` existed. */
  delete(keys: ReadonlyArray<string>, now: number): number {
    let removed = 0
    for (const key of keys) {
      const entry = this.live(key, now)
      if (entry === undefined) continue
      this.remove(key, entry)
      removed++
    }
    return removed
  }

  /** EXISTS: how many of `keys` exist (a key named twice counts twice, as in Redis). */
  exists(keys: ReadonlyArray<string>, now: number): number {
    let found = 0
    for (const key of keys) if (this.live(key, now) !== undefined) found++
    return found
  }

  /** INCR: the new value; an absent key counts from 0; the deadline stays. */
  increment(key: string, now: number): bigint | NotAnInteger | IncrementOverflow {
    const entry = this.live(key, now)
    let current = 0n
    if (entry !== undefined) {
      const text = entry.value.toString("latin1")
      if (!/^-?[1-9]\d{0,18}$|^0$/.test(text)) return new NotAnInteger()
      current = BigInt(text)
      if (current > maxInt64 || current < minInt64) return new NotAnInteger()
    }
    if (current === maxInt64) return new IncrementOverflow()
    const next = current + 1n
    const value = Buffer.from(next.toString())
    if (entry === undefined) this.entries.set(key, { value, expiresAt: undefined })
    else entry.value = value
    return next
  }

  /** EXPIRE/PEXPIRE at an absolute time: false when the key does not exist; a deadline already past deletes it. */
  expireAt(key: string, at: number, now: number): boolean {
    const entry = this.live(key, now)
    if (entry === undefined) return false
    if (at <= now) this.remove(key, entry)
    else this.setDeadline(key, entry, at)
    return true
  }

  /** PTTL: milliseconds left, -1 for a key without deadline, -2 for no key. */
  timeToLive(key: string, now: number): number {
    const entry = this.live(key, now)
    if (entry === undefined) return -2
    return entry.expiresAt === undefined ? -1 : entry.expiresAt - now
  }

  /** FLUSHDB. */
  clear(): void {
    this.entries.clear()
    this.heap = []
    this.withDeadline = 0
  }

  /** Removes keys past their deadline (strictly), at most `maxKeys` of them; returns how many it removed. */
  purgeExpired(now: number, maxKeys: number): number {
    let removed = 0
    while (removed < maxKeys && this.heap.length > 0 && this.heap[0]!.at < now) {
      const { key, at } = this.pop()
      const entry = this.entries.get(key)
      // Stale: the key is gone or has another deadline since.
      if (entry === undefined || entry.expiresAt !== at) continue
      this.remove(key, entry)
      removed++
    }
    return removed
  }

  // A binary min-heap of deadlines, by `at`.

  private push(deadline: Deadline): void {
    const heap = this.heap
    heap.push(deadline)
    let index = heap.length - 1
    while (index > 0) {
      const parent = (index - 1) >> 1
      if (heap[parent]!.at <= deadline.at) break
      heap[index] = heap[parent]!
      index = parent
    }
    heap[index] = deadline
  }

  private pop(): Deadline {
    const heap = this.heap
    const top = heap[0]!
    const last = heap.pop()!
    if (heap.length > 0) {
      let index = 0
      while (true) {
        const left = 2 * index + 1
        if (left >= heap.length) break
        const right = left + 1
        const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left
        if (heap[child]!.at >= last.at) break
        heap[index] = heap[child]!
        index = child
      }
      heap[index] = last
    }
    return top
  }

  /** Keeps one entry per key that still has that deadline. */
  private rebuildHeap(): void {
    const kept = new Set<string>()
    const live = this.heap.filter(({ key, at }) => {
      if (kept.has(key) || this.entries.get(key)?.expiresAt !== at) return false
      kept.add(key)
      return true
    })
    this.heap = []
    for (const deadline of live) this.push(deadline)
  }
}
