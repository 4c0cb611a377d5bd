/**
 * The commands of mini-redis: each turns a request's arguments into a reply, with Redis's arity rules and
 * error wording, so that redis-cli, redis-benchmark and client libraries see what they see from Redis.
 *
 * Execution is synchronous over the Store and the time the connection read from the Clock for its batch;
 * what a command needs of its connection (its name, whether it asked to quit, its subscriptions) is in
 * `Connection`. A connection with subscriptions may only (un)subscribe, PING and QUIT, as in Redis; each
 * channel of a SUBSCRIBE is answered with a reply of its own, so a command answers with one or more frames.
 */
import { Broker } from "./pubsub.js"
import type { Subscriber } from "./pubsub.js"
import * as Resp from "./resp.js"
import type { Frame } from "./resp.js"
import { Store } from "./store.js"

/** What a command may read or change of the connection that sent it. */
export interface Connection {
  /** The server's number for it (CLIENT ID, HELLO's `id`). */
  readonly id: number
  name: Buffer | undefined
  /** Set by QUIT: the connection closes once this reply is written. */
  quitting: boolean
  readonly subscriber: Subscriber
}

export interface Context {
  readonly store: Store
  readonly broker: Broker
  /** Clock milliseconds for this batch of commands. */
  readonly now: number
  readonly connection: Connection
  /** The server's INFO fields. */
  readonly info: () => ServerInfo
}

export interface ServerInfo {
  readonly version: string
  readonly port: number
  readonly uptimeSeconds: number
  readonly connectedClients: number
}

/** What a command answers: one frame, or several in a row (SUBSCRIBE answers each channel). */
export type Reply = Frame | ReadonlyArray<Frame>

/** Appends a reply to a connection's batch. */
export const writeReply = (writer: Resp.Writer, reply: Reply): void => {
  if (Array.isArray(reply)) for (const frame of reply as ReadonlyArray<Frame>) writer.frame(frame)
  else writer.frame(reply as Frame)
}

/** The bytes of a reply. */
export const encodeReply = (reply: Reply): Buffer => {
  const writer = new Resp.Writer()
  writeReply(writer, reply)
  return writer.take()
}

interface Command {
  /** Redis's arity: n exactly n arguments (name included), -n at least n. */
  readonly arity: number
  readonly run: (args: ReadonlyArray<Buffer>, context: Context) => Reply
}

/** SUBSCRIBE / PSUBSCRIBE: one reply per channel, with the connection's subscription count after it. */
const subscribing = (kind: "subscribe" | "psubscribe"): Command => ({
  arity: -2,
  run: (args, { broker, connection }) =>
    args.slice(1).map((name) => {
      if (kind === "subscribe") broker.subscribe(connection.subscriber, name)
      else broker.psubscribe(connection.subscriber, name)
      return Resp.array([Resp.bulk(kind), Resp.bulk(name), Resp.integer(Broker.count(connection.subscriber))])
    })
})

/** UNSUBSCRIBE / PUNSUBSCRIBE: the named ones, or all; with none to leave, one reply naming nil. */
const unsubscribing = (kind: "unsubscribe" | "punsubscribe"): Command => ({
  arity: -1,
  run: (args, { broker, connection }) => {
    const subscriber = connection.subscriber
    const own = kind === "unsubscribe" ? subscriber.channels : subscriber.patterns
    const names = args.length > 1 ? args.slice(1) : [...own].map((name) => Buffer.from(name, "latin1"))
    if (names.length === 0) return Resp.array([Resp.bulk(kind), Resp.nil, Resp.integer(Broker.count(subscriber))])
    return names.map((name) => {
      if (kind === "unsubscribe") broker.unsubscribe(subscriber, name)
      else broker.punsubscribe(subscriber, name)
      return Resp.array([Resp.bulk(kind), Resp.bulk(name), Resp.integer(Broker.count(subscriber))])
    })
  }
})

/** What a subscribed connection may still send. */
const allowedWhileSubscribed = new Set(["subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ping", "quit", "reset"])

const syntaxError = Resp.error("ERR syntax error")
const notInteger = Resp.error("ERR value is not an integer or out of range")

const text = (arg: Buffer) => arg.toString("latin1")
const key = text

const maxInt64 = 9223372036854775807n

/** A 64-bit integer argument as Redis's string2ll reads it ("0", "-5"; not "-0", "01", "+1"), or undefined. */
const int64Arg = (arg: Buffer): bigint | undefined => {
  const value = text(arg)
  if (!/^(0|-?[1-9]\d{0,18})$/.test(value)) return undefined
  const parsed = BigInt(value)
  return parsed > maxInt64 || parsed < -maxInt64 - 1n ? undefined : parsed
}

/**
 * A deadline in Clock milliseconds from a relative or absolute amount, as SET and EXPIRE take them; a
 * deadline past what Redis can hold is an error, one past JavaScript's safe integers is as good as never.
 */
const deadline = (amount: bigint, unitMillis: bigint, absolute: boolean, now: number): number | undefined => {
  const at = (absolute ? 0n : BigInt(now)) + amount * unitMillis
  if (at > maxInt64 || at < -maxInt64 - 1n) return undefined
  return at > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(at)
}

const expireUnits = { EX: [1000n, false], PX: [1n, false], EXAT: [1000n, true], PXAT: [1n, true] } as const

/** SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL], options read as Redis reads them. */
const set: Command = {
  arity: -3,
  run: (args, { store, now }) => {
    let expiry: { readonly unit: keyof typeof expireUnits; readonly amount: Buffer } | undefined
    let keepTtl = false
    let condition: "NX" | "XX" | undefined
    let get = false
    // Every option is checked first (a repeated one is allowed, a conflicting one is a syntax error) ...
    for (let index = 3; index < args.length; index++) {
      const option = text(args[index]!).toUpperCase()
      if (option === "NX" || option === "XX") {
        if (condition !== undefined && condition !== option) return syntaxError
        condition = option
      } else if (option === "GET") {
        get = true
      } else if (option === "KEEPTTL") {
        if (expiry !== undefined) return syntaxError
        keepTtl = true
      } else if (option in expireUnits && index + 1 < args.length) {
        const unit = option as keyof typeof expireUnits
        if (keepTtl || (expiry !== undefined && expiry.unit !== unit)) return syntaxError
        expiry = { unit, amount: args[++index]! }
      } else {
        return syntaxError
      }
    }
    // ... then the expire time.
    let expiresAt: number | undefined
    if (expiry !== undefined) {
      const amount = int64Arg(expiry.amount)
      if (amount === undefined) return notInteger
      const [unitMillis, absolute] = expireUnits[expiry.unit]
      const at = amount <= 0n ? undefined : deadline(amount, unitMillis, absolute, now)
      if (at === undefined) return Resp.error("ERR invalid expire time in 'set' command")
      expiresAt = at
    }
    const name = key(args[1]!)
    const previous = get ? store.get(name, now) : undefined
    const remaining = keepTtl ? store.timeToLive(name, now) : -1
    const written = store.set(name, Resp.detach(args[2]!), now, {
      ...(expiresAt !== undefined ? { expiresAt } : remaining >= 0 ? { expiresAt: now + remaining } : {}),
      ...(condition !== undefined ? { condition } : {})
    })
    if (get) return Resp.bulk(previous ?? null)
    return written ? Resp.ok : Resp.nil
  }
}

const expireOptions = new Set(["NX", "XX", "GT", "LT"])

/** EXPIRE / PEXPIRE key amount [NX | XX | GT | LT]. */
const expire = (name: "expire" | "pexpire", unitMillis: bigint): Command => ({
  arity: -3,
  run: (args, { store, now }) => {
    const amount = int64Arg(args[2]!)
    if (amount === undefined) return notInteger
    const unsupported = args.slice(3).find((arg) => !expireOptions.has(text(arg).toUpperCase()))
    if (unsupported !== undefined) return Resp.error(`ERR Unsupported option ${text(unsupported)}`)
    const options = new Set(args.slice(3).map((arg) => text(arg).toUpperCase()))
    if ((options.has("NX") && options.size > 1) || (options.has("GT") && options.has("LT"))) {
      return Resp.error("ERR NX and XX, GT or LT options at the same time are not compatible")
    }
    const at = deadline(amount, unitMillis, false, now)
    if (at === undefined) return Resp.error(`ERR invalid expire time in '${name}' command`)
    const name_ = key(args[1]!)
    const left = store.timeToLive(name_, now)
    if (left === -2) return Resp.integer(0)
    // A key without deadline counts as an infinite one for GT and LT.
    const current = left === -1 ? Infinity : now + left
    if (
      (options.has("NX") && left !== -1) || (options.has("XX") && left === -1) ||
      (options.has("GT") && !(at > current)) || (options.has("LT") && !(at < current))
    ) return Resp.integer(0)
    return Resp.integer(store.expireAt(name_, at, now) ? 1 : 0)
  }
})

const infoText = (info: ServerInfo, store: Store, section: string | undefined): string => {
  const server = [
    "# Server",
    `redis_version:${info.version}`,
    "redis_mode:standalone",
    `process_id:${process.pid}`,
    `tcp_port:${info.port}`,
    `uptime_in_seconds:${info.uptimeSeconds}`
  ]
  const clients = ["# Clients", `connected_clients:${info.connectedClients}`]
  const persistence = ["# Persistence", "loading:0"]
  const keyspace = ["# Keyspace", ...(store.size > 0 ? [`db0:keys=${store.size},expires=${store.expiring},avg_ttl=0`] : [])]
  const sections = new Map<string, Array<string>>([["server", server], ["clients", clients], ["persistence", persistence], ["keyspace", keyspace]])
  const chosen = section === undefined || section === "all" || section === "default" || section === "everything"
    ? [...sections.values()]
    : [sections.get(section) ?? []]
  const present = chosen.filter((lines) => lines.length > 0)
  return present.length === 0 ? "" : present.map((lines) => lines.join("\r\n")).join("\r\n\r\n") + "\r\n"
}

/** Arguments of each CLIENT subcommand, name and subcommand included. */
const clientArity = new Map([["setname", 3], ["getname", 2], ["setinfo", 4]])

/** Redis accepts names and client attributes made of printable ASCII without spaces (`!` to `~`). */
const printable = (value: Buffer) => value.every((byte) => byte >= 0x21 && byte <= 0x7e)

/** CLIENT SETNAME and HELLO … SETNAME: an error reply, or undefined once named (an empty name clears it). */
const setName = (connection: Connection, name: Buffer): Frame | undefined => {
  if (!printable(name)) return Resp.error("ERR Client names cannot contain spaces, newlines or special characters.")
  connection.name = name.length === 0 ? undefined : Resp.detach(name)
  return undefined
}

/**
 * AUTH as a Redis with no password set answers it: the `default` user takes any password, no other user
 * exists. An error reply, or undefined when accepted.
 */
const authenticate = (user: Buffer): Frame | undefined =>
  text(user) === "default"
    ? undefined
    : Resp.error("WRONGPASS invalid username-password pair or user is disabled.")

const commands: Record<string, Command> = {
  auth: {
    arity: -2,
    run: (args) => {
      if (args.length === 2) {
        return Resp.error(
          "ERR AUTH <password> called without any password configured for the default user. " +
            "Are you sure your configuration is correct?"
        )
      }
      if (args.length > 3) return syntaxError
      return authenticate(args[1]!) ?? Resp.ok
    }
  },
  ping: {
    arity: -1,
    run: (args, { connection }) => {
      if (args.length > 2) return Resp.error("ERR wrong number of arguments for 'ping' command")
      // A subscribed connection gets PING's answer in the shape of a message, as in Redis.
      if (Broker.count(connection.subscriber) > 0) return Resp.array([Resp.bulk("pong"), Resp.bulk(args[1] ?? "")])
      return args.length === 2 ? Resp.bulk(args[1]!) : Resp.simple("PONG")
    }
  },
  subscribe: subscribing("subscribe"),
  psubscribe: subscribing("psubscribe"),
  unsubscribe: unsubscribing("unsubscribe"),
  punsubscribe: unsubscribing("punsubscribe"),
  publish: { arity: 3, run: (args, { broker }) => Resp.integer(broker.publish(args[1]!, args[2]!)) },
  reset: {
    arity: 1,
    // Back to a fresh connection: no subscriptions, no name.
    run: (_, { broker, connection }) => {
      broker.remove(connection.subscriber)
      connection.name = undefined
      return Resp.simple("RESET")
    }
  },
  echo: { arity: 2, run: (args) => Resp.bulk(args[1]!) },
  get: { arity: 2, run: (args, { store, now }) => Resp.bulk(store.get(key(args[1]!), now) ?? null) },
  set,
  del: { arity: -2, run: (args, { store, now }) => Resp.integer(store.delete(args.slice(1).map(key), now)) },
  exists: { arity: -2, run: (args, { store, now }) => Resp.integer(store.exists(args.slice(1).map(key), now)) },
  incr: {
    arity: 2,
    run: (args, { store, now }) => {
      const result = store.increment(key(args[1]!), now)
      return typeof result === "bigint" ? Resp.integer(result) : Resp.error(`ERR ${result.message}`)
    }
  },
  expire: expire("expire", 1000n),
  pexpire: expire("pexpire", 1n),
  ttl: {
    arity: 2,
    run: (args, { store, now }) => {
      const left = store.timeToLive(key(args[1]!), now)
      return Resp.integer(left < 0 ? left : Math.round(left / 1000))
    }
  },
  pttl: { arity: 2, run: (args, { store, now }) => Resp.integer(store.timeToLive(key(args[1]!), now)) },
  dbsize: { arity: 1, run: (_, { store }) => Resp.integer(store.size) },
  flushdb: {
    arity: -1,
    run: (args, { store }) => {
      if (args.length > 2 || (args.length === 2 && !/^(a?sync)$/i.test(text(args[1]!)))) return syntaxError
      store.clear()
      return Resp.ok
    }
  },
  quit: {
    arity: -1,
    run: (_, { connection }) => {
      connection.quitting = true
      return Resp.ok
    }
  },
  info: {
    arity: -1,
    run: (args, { info, store }) => Resp.bulk(infoText(info(), store, args[1] === undefined ? undefined : text(args[1]).toLowerCase()))
  },
  command: {
    arity: -1,
    // redis-cli asks for COMMAND DOCS on start for its hints; an empty answer is what an old server gives.
    run: (args) => {
      const sub = args[1] === undefined ? undefined : text(args[1]).toUpperCase()
      if (sub === "COUNT") return Resp.integer(Object.keys(commands).length)
      return Resp.array([])
    }
  },
  client: {
    arity: -2,
    run: (args, { connection }) => {
      const sub = text(args[1]!).toLowerCase()
      const arity = clientArity.get(sub)
      if (arity === undefined) {
        return Resp.error(`ERR unknown subcommand '${text(args[1]!)}'. Try CLIENT HELP.`)
      }
      if (args.length !== arity) return Resp.error(`ERR wrong number of arguments for 'client|${sub}' command`)
      if (sub === "getname") return Resp.bulk(connection.name ?? null)
      if (sub === "setname") {
        const name = setName(connection, args[2]!)
        return name === undefined ? Resp.ok : name
      }
      const attribute = text(args[2]!).toLowerCase()
      if (attribute !== "lib-name" && attribute !== "lib-ver") {
        return Resp.error(`ERR Unrecognized option '${text(args[2]!)}'`)
      }
      if (!printable(args[3]!)) {
        return Resp.error(`ERR ${attribute} cannot contain spaces, newlines or special characters.`)
      }
      return Resp.ok
    }
  },
  hello: {
    arity: -1,
    run: (args, { connection }) => {
      if (args.length > 1) {
        const version = int64Arg(args[1]!)
        if (version === undefined) return Resp.error("ERR Protocol version is not an integer or out of range")
        if (version !== 2n) return Resp.error("NOPROTO sorry, this protocol version is not supported")
      }
      for (let index = 2; index < args.length; index++) {
        const option = text(args[index]!).toUpperCase()
        if (option === "AUTH" && index + 2 < args.length) {
          const refused = authenticate(args[index + 1]!)
          if (refused !== undefined) return refused
          index += 2
        } else if (option === "SETNAME" && index + 1 < args.length) {
          const refused = setName(connection, args[++index]!)
          if (refused !== undefined) return refused
        } else {
          return Resp.error(`ERR Syntax error in HELLO option '${text(args[index]!)}'`)
        }
      }
      return Resp.array([
        Resp.bulk("server"),
        Resp.bulk("redis"),
        Resp.bulk("version"),
        Resp.bulk("7.0.0"),
        Resp.bulk("proto"),
        Resp.integer(2),
        Resp.bulk("id"),
        Resp.integer(connection.id),
        Resp.bulk("mode"),
        Resp.bulk("standalone"),
        Resp.bulk("role"),
        Resp.bulk("master"),
        Resp.bulk("modules"),
        Resp.array([])
      ])
    }
  }
}

/** Redis's answer to a command it does not know, naming the first arguments (up to 128 characters). */
const unknownCommand = (args: ReadonlyArray<Buffer>): Frame => {
  let listed = ""
  for (let index = 1; index < args.length && listed.length < 128; index++) {
    listed += `'${text(args[index]!).slice(0, 128 - listed.length)}' `
  }
  const sanitized = (value: string) => value.replace(/[\r\n]/g, " ")
  return Resp.error(
    sanitized(`ERR unknown command '${text(args[0]!).slice(0, 128)}', with args beginning with: ${listed}`)
  )
}

/** Runs one command (`args[0]` is its name, any case). */
/** Names as clients send them (`SET`, `set`) to the lower-case name, so the usual spellings make no new string. */
const spellings = new Map<string, string>()
const commandName = (sent: string): string => {
  const known = spellings.get(sent)
  if (known !== undefined) return known
  const name = sent.toLowerCase()
  if (spellings.size < 1024 && Object.prototype.hasOwnProperty.call(commands, name)) spellings.set(sent, name)
  return name
}

export const execute = (args: ReadonlyArray<Buffer>, context: Context): Reply => {
  const name = commandName(text(args[0]!))
  const command = Object.prototype.hasOwnProperty.call(commands, name) ? commands[name]! : undefined
  if (command === undefined) return unknownCommand(args)
  if (Broker.count(context.connection.subscriber) > 0 && !allowedWhileSubscribed.has(name)) {
    return Resp.error(
      `ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`
    )
  }
  if (command.arity > 0 ? args.length !== command.arity : args.length < -command.arity) {
    return Resp.error(`ERR wrong number of arguments for '${name}' command`)
  }
  return command.run(args, context)
}
