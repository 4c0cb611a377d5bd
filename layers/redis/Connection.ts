/**
 * Closing a Redis connection within a bound. Finalizers run uninterruptibly, where `Effect.timeout` cannot stop
 * the wait for a Redis that does not answer (hung, or behind a partition), so QUIT is cut by a timer of the event
 * loop instead, and the socket dropped either way: a shutdown is never held up by Redis for more than `millis`.
 */
import { Effect } from "effect"
import type Redis from "ioredis"

/** How long a closing connection waits for QUIT's reply, at most. */
export const quitWithinMillis = 500

export const quit = (connection: Redis, millis = quitWithinMillis): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let done = false
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(timer)
      connection.disconnect()
      resume(Effect.void)
    }
    const timer = setTimeout(finish, millis)
    connection.quit().then(finish, finish)
  })
