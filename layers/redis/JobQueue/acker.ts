/**
 * The acker: one fiber per queue that sends the acks waiting in line (`ack` in settle.ts) in one ack script
 * call, at most `maxBatch`, one call at a time: an ack costs one call when the queue is quiet, a share of one
 * under load. Each ack is answered with Redis's verdict for its lease, or with the call's failure; when the
 * acker stops (the queue is closing), the acks left, sent or not, fail with "the queue is closed".
 */
import * as Effect from "effect/Effect"
import type { JobQueue } from "keel/services"
import { type Calls, unavailable } from "./calls.js"
import { concluded, lostOf } from "./lease.js"
import { maxBatch, type Settings } from "./settings.js"
import type { PendingAck, State } from "./state.js"

/** Sends the acks waiting, at most `maxBatch` a call; when the queue closes, the acks left fail. */
export const acker = (state: State, { run }: Calls, { consumer, group, keys }: Settings) => {
  const answerAck = ({ lease, resume, state: leaseState }: PendingAck, status: string | JobQueue.QueueUnavailable) => {
    leaseState.settling--
    if (typeof status !== "string") resume(Effect.fail(status))
    else resume(concluded(state, lease, leaseState, status, true) ? Effect.void : Effect.fail(lostOf(lease)))
  }

  return Effect.gen(function*() {
    while (true) {
      yield* state.acksWaiting.until(() => state.pendingAcks.length > 0)
      state.sendingAcks = state.pendingAcks.slice(0, maxBatch)
      state.pendingAcks = state.pendingAcks.slice(state.sendingAcks.length)
      const args: Array<string | number> = [group, consumer, keys.job]
      for (const { lease, state: leaseState } of state.sendingAcks) args.push(lease.id, leaseState.entry, lease.delivery)
      const reply = yield* Effect.either(run("ack", [keys.stream], args))
      const sent = state.sendingAcks
      state.sendingAcks = []
      sent.forEach((pending, index) =>
        answerAck(pending, reply._tag === "Left" ? reply.left : (reply.right as ReadonlyArray<string>)[index] ?? "lost")
      )
    }
  }).pipe(Effect.ensuring(Effect.sync(() => {
    const left = [...state.sendingAcks, ...state.pendingAcks]
    state.sendingAcks = []
    state.pendingAcks = []
    for (const pending of left) answerAck(pending, unavailable("ack: the queue is closed"))
  })))
}
