/**
 * One timer for many deadlines: how calls are bounded in time without a timer and a racing fiber each.
 *
 * Racing every call that suspends against `Effect.sleep` forked two fibers and armed and cleared a timer per
 * call: 60 µs, ten times the rest of the job server's middleware together. Calls that end in time are the
 * rule, so here a deadline is an entry in one min-heap per Clock, a call that ends only marks its entry
 * cancelled, and a single wake-up waits for the earliest entry. Cancelled entries are dropped when they reach
 * the top, or all at once when they outnumber the live ones, and the wake-up is disarmed when none is live,
 * so nothing keeps the process alive once no call is running.
 *
 * Time is the caller's Clock: on the live Clock the wake-up is a plain timer; on any other (TestClock) it is a
 * fiber sleeping on that Clock, so virtual time drives deadlines as it drives `Effect.sleep`.
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as LiveClock from "./liveClock.js"

/** A deadline: `fire` runs once at `at` (the Clock's milliseconds) unless it was cancelled first. */
export interface Entry {
  readonly at: number
  readonly fire: () => void
  readonly queue: DeadlineQueue
  cancelled: boolean
}

interface DeadlineQueue {
  readonly clock: Clock.Clock
  /** Min-heap on `at`; holds cancelled entries until they reach the top or a compaction. */
  readonly heap: Array<Entry>
  /** Entries neither fired nor cancelled. */
  live: number
  /** When the wake-up is armed for; Infinity when it is not. */
  armedAt: number
  /** Disarms the wake-up. */
  disarm: (() => void) | undefined
}

const queues = new WeakMap<Clock.Clock, DeadlineQueue>()
// The wake-up fiber on a virtual Clock is machinery, not work: left out of Effect's fiber metrics.
const wakeUpRuntime = Runtime.make({
  context: Runtime.defaultRuntime.context,
  fiberRefs: Runtime.defaultRuntime.fiberRefs,
  runtimeFlags: RuntimeFlags.disable(Runtime.defaultRuntime.runtimeFlags, RuntimeFlags.RuntimeMetrics)
})

const siftUp = (heap: Array<Entry>, index: number) => {
  const entry = heap[index]!
  while (index > 0) {
    const parent = (index - 1) >> 1
    if (heap[parent]!.at <= entry.at) break
    heap[index] = heap[parent]!
    index = parent
  }
  heap[index] = entry
}

const siftDown = (heap: Array<Entry>, index: number) => {
  const entry = heap[index]!
  const half = heap.length >> 1
  while (index < half) {
    let child = 2 * index + 1
    if (child + 1 < heap.length && heap[child + 1]!.at < heap[child]!.at) child++
    if (heap[child]!.at >= entry.at) break
    heap[index] = heap[child]!
    index = child
  }
  heap[index] = entry
}

const popTop = (heap: Array<Entry>): Entry => {
  const top = heap[0]!
  const last = heap.pop()!
  if (heap.length > 0) {
    heap[0] = last
    siftDown(heap, 0)
  }
  return top
}

const arm = (queue: DeadlineQueue, at: number) => {
  queue.disarm?.()
  queue.armedAt = at
  // A timer past 2^31 - 1 ms would fire at once: a farther deadline is reached in several wake-ups.
  const delay = Math.min(2 ** 31 - 1, Math.max(0, at - queue.clock.unsafeCurrentTimeMillis()))
  if (LiveClock.isLive(queue.clock)) {
    const timer = setTimeout(() => wake(queue), delay)
    queue.disarm = () => clearTimeout(timer)
  } else {
    const sleeper: Fiber.RuntimeFiber<void> = Runtime.runFork(wakeUpRuntime)(
      Effect.flatMap(queue.clock.sleep(Duration.millis(delay)), () => Effect.sync(() => wake(queue)))
    )
    queue.disarm = () => sleeper.unsafeInterruptAsFork(FiberId.none)
  }
}

const wake = (queue: DeadlineQueue) => {
  queue.disarm = undefined
  queue.armedAt = Number.POSITIVE_INFINITY
  const now = queue.clock.unsafeCurrentTimeMillis()
  const heap = queue.heap
  while (heap.length > 0 && (heap[0]!.cancelled || heap[0]!.at <= now)) {
    const entry = popTop(heap)
    if (entry.cancelled) continue
    entry.cancelled = true
    queue.live--
    entry.fire()
  }
  if (heap.length > 0) arm(queue, heap[0]!.at)
}

/** Calls `fire` once `millis` have passed on `clock`, unless `cancel` is called with the entry first. */
export const schedule = (clock: Clock.Clock, millis: number, fire: () => void): Entry => {
  let queue = queues.get(clock)
  if (queue === undefined) {
    queue = { clock, heap: [], live: 0, armedAt: Number.POSITIVE_INFINITY, disarm: undefined }
    queues.set(clock, queue)
  }
  const entry: Entry = { at: clock.unsafeCurrentTimeMillis() + millis, fire, queue, cancelled: false }
  queue.heap.push(entry)
  siftUp(queue.heap, queue.heap.length - 1)
  queue.live++
  if (entry.at < queue.armedAt) arm(queue, entry.at)
  return entry
}

/** Cancels a deadline that has not fired; does nothing to one that has. */
export const cancel = (entry: Entry): void => {
  if (entry.cancelled) return
  entry.cancelled = true
  const queue = entry.queue
  queue.live--
  if (queue.live === 0) {
    queue.heap.length = 0
    queue.disarm?.()
    queue.disarm = undefined
    queue.armedAt = Number.POSITIVE_INFINITY
  } else if (queue.heap.length > 2 * queue.live + 1024) {
    const kept = queue.heap.filter((kept) => !kept.cancelled)
    queue.heap.length = 0
    for (const live of kept) {
      queue.heap.push(live)
      siftUp(queue.heap, queue.heap.length - 1)
    }
    if (queue.heap[0]!.at > queue.armedAt) arm(queue, queue.heap[0]!.at)
  }
}
