/**
 * Keel's typed errors.
 *
 * Every failure a caller can see is data: a `Data.TaggedError` carrying exactly the fields needed to act
 * on it (how long to wait, what the limit was, why intake is closed). Callers match on `_tag` with
 * `Effect.catchTag`; nothing is ever a bare string or an `Error` thrown from deep inside.
 */
import { Data, Duration } from "effect"

/** Intake is closed because the service is draining; the work was not accepted. */
export class ShuttingDown extends Data.TaggedError("ShuttingDown")<{
  readonly reason: string
}> {
  override get message() {
    return `shutting down: ${this.reason}`
  }
}

/** A bounded queue is full and the caller asked not to wait. */
export class QueueFull extends Data.TaggedError("QueueFull")<{
  readonly capacity: number
}> {
  override get message() {
    return `queue full (capacity ${this.capacity})`
  }
}

/** An accepted job was pushed out of a full queue by a newer one (the `dropOldest` strategy). */
export class Evicted extends Data.TaggedError("Evicted")<{
  readonly capacity: number
}> {
  override get message() {
    return `evicted from a full queue (capacity ${this.capacity}) by a newer job`
  }
}

/** Work did not finish within its time limit and was interrupted. */
export class Timeout extends Data.TaggedError("Timeout")<{
  readonly after: Duration.Duration
}> {
  override get message() {
    return `timed out after ${Duration.format(this.after)}`
  }
}
