/**
 * Command-line flags of the worker-pool example, validated up front: a bad flag is a clear message and
 * exit code 2, never a pool started with NaN workers.
 */
import { parseArgs } from "node:util"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"

export interface Settings {
  readonly workers: number
  readonly jobs: number
  readonly capacity: number
  readonly minMs: number
  readonly maxMs: number
  readonly failureRate: number
  readonly retries: number
  readonly rate: number
  readonly policy: "drain" | "handBack"
  readonly seed: number | undefined
  readonly drainTimeout: Duration.Duration | undefined
  readonly hangJob: number | undefined
}

export const usage = `usage: worker-pool [options]
  --workers N         worker fibers (default 4)
  --jobs N            jobs to produce; 0 = until Ctrl+C (default 200)
  --capacity N        queue capacity (default 32)
  --min-ms N          shortest job in ms (default 50)
  --max-ms N          longest job in ms (default 500)
  --failure-rate P    chance an attempt fails, 0..1 (default 0.1)
  --retries N         retries per job, exponential backoff with full jitter (default 2)
  --rate N            jobs produced per second; 0 = as fast as the queue takes them (default 0)
  --policy P          on shutdown: drain (run queued jobs) or handBack (return them) (default drain)
  --seed N            seed for durations and failures (default: random)
  --drain-timeout D   drain deadline, e.g. "10 seconds" (default KEEL_DRAIN_TIMEOUT or 20 seconds)
  --hang-job N        job N never ends and cannot be interrupted (a stuck call), to see what the
                      shutdown report lists when the drain is cut`

const integer = (name: string, text: string, min: number): Either.Either<number, string> => {
  const value = Number(text)
  return Number.isInteger(value) && value >= min
    ? Either.right(value)
    : Either.left(`--${name} must be an integer ≥ ${min}, got "${text}"`)
}

const parseDuration = (text: string): Either.Either<Duration.Duration, string> =>
  Option.match(Duration.decodeUnknown(text), {
    onNone: () => Either.left(`--drain-timeout must be a duration like "10 seconds", got "${text}"`),
    onSome: Either.right
  })

export const parseSettings = (argv: ReadonlyArray<string>): Either.Either<Settings, string> =>
  Either.gen(function*() {
    const { values } = yield* Either.try({
      try: () =>
        parseArgs({
          args: [...argv],
          strict: true,
          options: {
            workers: { type: "string", default: "4" },
            jobs: { type: "string", default: "200" },
            capacity: { type: "string", default: "32" },
            "min-ms": { type: "string", default: "50" },
            "max-ms": { type: "string", default: "500" },
            "failure-rate": { type: "string", default: "0.1" },
            retries: { type: "string", default: "2" },
            rate: { type: "string", default: "0" },
            policy: { type: "string", default: "drain" },
            seed: { type: "string" },
            "drain-timeout": { type: "string" },
            "hang-job": { type: "string" }
          }
        }),
      catch: (error) => (error as Error).message
    })
    const failureRate = Number(values["failure-rate"])
    if (!(failureRate >= 0 && failureRate <= 1)) {
      return yield* Either.left(`--failure-rate must be between 0 and 1, got "${values["failure-rate"]}"`)
    }
    const policy = values.policy
    if (policy !== "drain" && policy !== "handBack") {
      return yield* Either.left(`--policy must be drain or handBack, got "${policy}"`)
    }
    const minMs = yield* integer("min-ms", values["min-ms"], 0)
    const maxMs = yield* integer("max-ms", values["max-ms"], minMs)
    return {
      workers: yield* integer("workers", values.workers, 1),
      jobs: yield* integer("jobs", values.jobs, 0),
      capacity: yield* integer("capacity", values.capacity, 1),
      minMs,
      maxMs,
      failureRate,
      retries: yield* integer("retries", values.retries, 0),
      rate: yield* integer("rate", values.rate, 0),
      policy,
      seed: values.seed === undefined ? undefined : yield* integer("seed", values.seed, 0),
      drainTimeout: values["drain-timeout"] === undefined ? undefined : yield* parseDuration(values["drain-timeout"]),
      hangJob: values["hang-job"] === undefined ? undefined : yield* integer("hang-job", values["hang-job"], 1)
    }
  })
