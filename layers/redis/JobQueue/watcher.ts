/**
 * The watcher: one fiber per queue that notes when an entry is added to the stream by anyone (an offer in any
 * process, a release, a promoted job), so that the fetcher, waiting for a change, tries again at once. It
 * blocks on the queue's dedicated connection in a plain `XREAD BLOCK`, which takes nothing: a blocked group
 * read could not be withdrawn (see take.ts).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Redis } from "ioredis"
import { callTimeout } from "../Connection.js"
import type { Calls } from "./calls.js"
import type { Settings } from "./settings.js"
import { bump, type State } from "./state.js"

/** How long the wake-up read blocks in Redis; bounds how late shutdown finds it. */
export const blockMillis = 1_000

/**
 * Wakes the local takers when an entry is added to the stream by anyone: a plain XREAD BLOCK (no group, so
 * it takes nothing) from the newest entry seen, on the dedicated connection `blocking`, bounded to `blockMillis`.
 */
export const watcher = (state: State, { attempt }: Calls, { keys }: Settings, blocking: Redis) =>
  Effect.gen(function*() {
    let lastSeen: string | undefined
    while (true) {
      if (lastSeen === undefined) {
        const newest = yield* Effect.either(attempt("XREVRANGE", () => blocking.xrevrange(keys.stream, "+", "-", "COUNT", 1)))
        if (newest._tag === "Left") {
          yield* Effect.sleep(Duration.millis(500))
          continue
        }
        lastSeen = newest.right[0]?.[0] ?? "0-0"
      }
      const read = yield* Effect.either(attempt(
        "XREAD",
        () => blocking.call("XREAD", ["BLOCK", blockMillis, "COUNT", 100, "STREAMS", keys.stream, lastSeen!]),
        Duration.sum(Duration.millis(blockMillis), callTimeout)
      ))
      if (read._tag === "Left") {
        yield* Effect.sleep(Duration.millis(500))
        continue
      }
      const streams = read.right as ReadonlyArray<[string, ReadonlyArray<[string, unknown]>]> | null
      const entries = streams?.[0]?.[1] ?? []
      if (entries.length > 0) {
        lastSeen = entries[entries.length - 1]![0]
        bump(state)
      }
    }
  })
