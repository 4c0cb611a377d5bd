/**
 * What a queue is made with, fixed for its life: the contract's options in the form the parts use them (the
 * lease in whole milliseconds, how often to look for expired leases), its consumer name, its Redis names and
 * the recorder of its metric series.
 * The options are checked before this is read (`make` dies on invalid ones).
 */
import * as Duration from "effect/Duration"
import { JobQueue } from "keel/services"
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import type { Options } from "./index.js"
import { type Keys, keysOf } from "./keys.js"

/** At most this many jobs are leased, or acked, in one script call. */
export const maxBatch = 100

/** How often, at most, waiting takers look for expired leases. */
export const takerRecheck = Duration.seconds(1)

/** A delay option in whole milliseconds (rounded up, so a job is never due early). */
export const delayMillisOf = (delay: Duration.DurationInput | undefined) =>
  Math.max(0, Math.ceil(Duration.toMillis(Duration.decode(delay ?? Duration.zero))))

/** One queue's settings, derived once from its options by `settingsOf`. */
export interface Settings {
  /** The queue's name, as its warnings name it. */
  readonly name: string
  /** Most jobs ready or delayed at once (the contract's `capacity`): past it, offers wait or fail. */
  readonly capacity: number
  /** Deliveries of a job before it is dead-lettered (the contract's `maxDeliveries`). */
  readonly maxDeliveries: number
  /** The lease duration, as the service reports it. */
  readonly leaseDuration: Duration.Duration
  /** The lease duration in whole milliseconds (at least 1), as Redis measures idle times. */
  readonly leaseMillis: number
  /** Most dead letters kept: past it the oldest is dropped with its hash. */
  readonly maxDeadLetters: number
  /**
   * How often expired leases are looked for, so a dead consumer's jobs are taken over at most a quarter of a
   * lease (and at most `takerRecheck`) after their lease ran out; in milliseconds, and as `recheck`.
   */
  readonly recheckMillis: number
  /** `recheckMillis` as a Duration. */
  readonly recheck: Duration.Duration
  /** This queue's consumer name in the group. */
  readonly consumer: string
  /** The queue's keys. */
  readonly keys: Keys
  /** The consumer group's name. */
  readonly group: string
  /** Updates the queue's metric series (`JobQueue.metrics(name)`). */
  readonly metrics: JobQueue.MetricsRecorder
}

/** The settings of a queue made with `options`; a consumer name is made here when the options give none. */
export const settingsOf = (options: Options): Settings => {
  const leaseDuration = Duration.decode(options.leaseDuration)
  const leaseMillis = Math.max(1, Math.round(Duration.toMillis(leaseDuration)))
  const recheckMillis = Math.max(10, Math.min(Duration.toMillis(takerRecheck), leaseMillis / 4))
  return {
    name: options.name,
    capacity: options.capacity,
    maxDeliveries: options.maxDeliveries,
    leaseDuration,
    leaseMillis,
    maxDeadLetters: options.maxDeadLetters ?? JobQueue.defaultMaxDeadLetters,
    recheckMillis,
    recheck: Duration.millis(recheckMillis),
    consumer: options.consumer ?? `${hostname()}:${process.pid}:${randomUUID()}`,
    metrics: JobQueue.metricsRecorder(options.name),
    ...keysOf(options.name)
  }
}
