/**
 * Whether a Clock is Effect's own, the one that reads the system's time: machinery that would schedule work
 * on Node's event loop (a timer, `setImmediate`) does so only under it. Under TestClock, time and the order
 * in which fibers run are the test's to drive, with microtask yields and virtual sleeps.
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

const liveClock = Effect.runSync(Effect.clock)

export const isLive = (clock: Clock.Clock): boolean => clock === liveClock
