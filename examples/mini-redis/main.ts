/**
 * mini-redis: `npm run example:mini-redis -- --port 6379`. A Redis-compatible server on Keel: redis-cli,
 * redis-benchmark and client libraries work against it. SIGTERM or SIGINT drains it: it stops accepting,
 * answers the commands each connection has sent, closes them, and exits with Lifecycle's code.
 */
import * as Effect from "effect/Effect"
import { runMain } from "keel/node"
import * as Server from "./server.js"

const usage = "usage: mini-redis [--port N] (default 6379; 0 picks a free port)"

const parsePort = (args: ReadonlyArray<string>): number | string => {
  if (args.length === 0) return 6379
  if (args.length === 2 && args[0] === "--port" && /^\d{1,5}$/.test(args[1]!) && Number(args[1]) <= 65535) {
    return Number(args[1])
  }
  return usage
}

const port = parsePort(process.argv.slice(2))
if (typeof port === "string") {
  process.stderr.write(`${port}\n`)
  process.exit(2)
}

const program = Effect.gen(function*() {
  const server = yield* Server.make({ port })
  yield* Effect.logInfo(`mini-redis ${Server.version} listening on ${server.address.host}:${server.address.port}`)
  yield* Effect.never
}).pipe(Effect.scoped)

runMain(program, { drainTimeout: "10 seconds" })
