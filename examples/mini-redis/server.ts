/**
 * The mini-redis server: a Store shared by every connection, served over Keel's TCP server.
 *
 * Each connection reads its bytes into a `RequestReader` and answers every complete command in the chunk
 * at once, with one write for the batch (pipelining). Time for expiry comes from the Clock, read once per
 * batch. While a client does not read its replies (the socket's buffer is full) the connection stops reading
 * commands, so a slow client holds at most one batch of replies. A protocol error is answered with Redis's
 * `-ERR Protocol error: …` and the connection closed; other connections carry on, as they do when a command
 * itself fails with a defect (logged, answered `-ERR internal error`, that connection closed). When the server drains,
 * each connection finishes the commands it has read, writes their replies and closes between commands.
 * Expired keys are also purged in the background, a bounded number per tick. Published messages are written
 * to each subscriber at once; one that leaves more than `subscriberOutputLimit` unread is disconnected.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { Lifecycle } from "keel"
import { TcpServer } from "keel/node"
import * as Commands from "./commands.js"
import { Broker } from "./pubsub.js"
import type { Subscriber } from "./pubsub.js"
import * as Resp from "./resp.js"
import { Store } from "./store.js"

export interface Options extends TcpServer.Options {
  readonly limits?: Resp.Limits
  /**
   * Bytes of messages a subscriber may leave unread before it is disconnected (Redis's
   * client-output-buffer-limit for pubsub, hard limit). Default 32 MiB.
   */
  readonly subscriberOutputLimit?: number
  /** How often expired keys are purged in the background. Default 100 ms. */
  readonly purgeEvery?: Duration.DurationInput
  /** Most keys purged per tick. Default 1000. */
  readonly purgeBatch?: number
}

export const version = "7.0.0"

/** Serves one connection until the client leaves, sends bad input, or the server drains. */
const serveConnection = (
  store: Store,
  broker: Broker,
  info: () => Commands.ServerInfo,
  limits: Resp.Limits,
  subscriberOutputLimit: number
) =>
(connection: TcpServer.Connection): Effect.Effect<void> =>
  Effect.gen(function*() {
    const clock = yield* Effect.clock
    const runtime = yield* Effect.runtime<never>()
    const socket = connection.socket
    const ended = yield* Deferred.make<void>()
    const reader = new Resp.RequestReader(limits)
    const subscriber: Subscriber = {
      channels: new Set(),
      patterns: new Set(),
      deliver: (message) => {
        // A subscriber that leaves this much unread is cut off, as Redis does.
        if (socket.writableLength + message.length > subscriberOutputLimit) return void socket.destroy()
        socket.write(message)
      }
    }
    const state: Commands.Connection = { id: connection.id, name: undefined, quitting: false, subscriber }
    const end = () => {
      broker.remove(subscriber)
      Deferred.unsafeDone(ended, Exit.void)
    }

    // Ends the connection once the replies written so far have gone out.
    const close = () => {
      if (socket.writableEnded) return
      socket.end()
      socket.once("finish", () => socket.destroy())
    }

    const replies = new Resp.Writer()
    socket.on("data", (chunk: Buffer) => {
      // Bytes that arrive after the connection was closed are not commands it has read: none is run.
      if (socket.writableEnded) return
      reader.push(chunk)
      let closing = false
      const context: Commands.Context = { store, broker, now: clock.unsafeCurrentTimeMillis(), connection: state, info }
      try {
        for (let args = reader.next(); args !== undefined; args = state.quitting ? undefined : reader.next()) {
          Commands.writeReply(replies, Commands.execute(args, context))
        }
      } catch (error) {
        if (error instanceof Resp.ProtocolError) {
          replies.frame(Resp.error(`ERR ${error.message}`))
        } else {
          // A defect in a command: this connection gets an error and is closed; the server carries on.
          Runtime.runFork(runtime)(Effect.logError(`mini-redis: connection ${connection.id}: command failed`, error))
          replies.frame(Resp.error("ERR internal error"))
        }
        closing = true
      }
      if (replies.size > 0 && !socket.write(replies.take())) {
        // The client is not reading: stop reading its commands until it has taken these replies.
        socket.pause()
        socket.once("drain", () => socket.resume())
      }
      if (closing || state.quitting || connection.isDraining()) close()
    })
    socket.on("error", end)
    socket.on("close", end)

    yield* Effect.raceFirst(
      Deferred.await(ended),
      // Between two chunks every command read has been answered: the connection is at a frame boundary.
      Effect.zipRight(connection.draining, Effect.zipRight(Effect.sync(close), Deferred.await(ended)))
    )
  })

/** Starts mini-redis in the current Scope: its TCP server, and the background purge of expired keys. */
export const make = (
  options: Options = {}
): Effect.Effect<TcpServer.TcpServer & { readonly store: Store }, TcpServer.ServeError, Scope.Scope | Lifecycle.Lifecycle> =>
  Effect.gen(function*() {
    const store = new Store()
    const broker = new Broker()
    const clock = yield* Effect.clock
    const startedAt = clock.unsafeCurrentTimeMillis()
    let tcp: TcpServer.TcpServer | undefined
    let connectedClients = 0
    const info = (): Commands.ServerInfo => ({
      version,
      port: tcp?.address.port ?? 0,
      uptimeSeconds: Math.floor((clock.unsafeCurrentTimeMillis() - startedAt) / 1000),
      connectedClients
    })
    tcp = yield* TcpServer.serve(
      { name: "mini-redis", ...options },
      (connection) =>
        Effect.acquireUseRelease(
          Effect.sync(() => connectedClients++),
          () =>
            serveConnection(
              store,
              broker,
              info,
              options.limits ?? Resp.defaultLimits,
              options.subscriberOutputLimit ?? 32 * 1024 * 1024
            )(connection),
          () => Effect.sync(() => connectedClients--)
        )
    )
    const purgeBatch = options.purgeBatch ?? 1000
    yield* Effect.sync(() => store.purgeExpired(clock.unsafeCurrentTimeMillis(), purgeBatch)).pipe(
      Effect.repeat({ schedule: Schedule.spaced(options.purgeEvery ?? "100 millis") }),
      Effect.interruptible,
      Effect.forkScoped
    )
    return { ...tcp, store }
  })
