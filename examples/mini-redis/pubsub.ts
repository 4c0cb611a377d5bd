/**
 * Publish/subscribe for mini-redis: channels and glob patterns, as Redis has them.
 *
 * A subscriber is a connection: the broker hands it each message already encoded, and the connection
 * decides whether it can take it. A subscriber that does not read its messages is disconnected once what
 * it has not taken passes its output limit (Redis's `client-output-buffer-limit pubsub`), so one slow
 * client never makes the server's memory grow without bound.
 */
import * as Resp from "./resp.js"

export interface Subscriber {
  readonly channels: Set<string>
  readonly patterns: Set<string>
  /** Delivers one encoded message to the connection. */
  readonly deliver: (message: Buffer) => void
}

type Token =
  | { readonly _tag: "Star" }
  | { readonly _tag: "One"; readonly matches: (char: string) => boolean }

/** A glob as tokens: `*`, and single-character matchers for `?`, `[…]`, `[^…]`, `\x` and literals. */
const tokenize = (pattern: string): Array<Token> => {
  const tokens: Array<Token> = []
  for (let p = 0; p < pattern.length; p++) {
    const char = pattern[p]!
    if (char === "*") {
      if (tokens.at(-1)?._tag !== "Star") tokens.push({ _tag: "Star" })
    } else if (char === "?") {
      tokens.push({ _tag: "One", matches: () => true })
    } else if (char === "[") {
      let q = p + 1
      const negate = pattern[q] === "^"
      if (negate) q++
      const tests: Array<(c: string) => boolean> = []
      while (q < pattern.length && pattern[q] !== "]") {
        if (pattern[q] === "\\" && q + 1 < pattern.length) {
          const escaped = pattern[++q]!
          tests.push((c) => c === escaped)
        } else if (q + 2 < pattern.length && pattern[q + 1] === "-" && pattern[q + 2] !== "]") {
          const [low, high] = [pattern[q]!, pattern[q + 2]!].sort() as [string, string]
          tests.push((c) => c >= low && c <= high)
          q += 2
        } else {
          const literal = pattern[q]!
          tests.push((c) => c === literal)
        }
        q++
      }
      tokens.push({ _tag: "One", matches: (c) => tests.some((test) => test(c)) !== negate })
      p = q
    } else {
      const literal = char === "\\" && p + 1 < pattern.length ? pattern[++p]! : char
      tokens.push({ _tag: "One", matches: (c) => c === literal })
    }
  }
  return tokens
}

/**
 * Whether `text` matches the glob `pattern` as Redis's stringmatchlen does (`*`, `?`, `[…]`, `[^…]`, `\`).
 * Greedy with backtracking to the last `*` only: at most pattern × text steps, whatever the pattern.
 */
export const globMatch = (pattern: string, text: string): boolean => {
  const tokens = tokenize(pattern)
  let p = 0
  let t = 0
  let star = -1
  let resumeAt = 0
  while (t < text.length) {
    const token = tokens[p]
    if (token?._tag === "Star") {
      star = p++
      resumeAt = t
    } else if (token !== undefined && token.matches(text[t]!)) {
      p++
      t++
    } else if (star >= 0) {
      p = star + 1
      t = ++resumeAt
    } else {
      return false
    }
  }
  while (tokens[p]?._tag === "Star") p++
  return p === tokens.length
}

const key = (bytes: Buffer) => bytes.toString("latin1")

export class Broker {
  private readonly channels = new Map<string, Set<Subscriber>>()
  private readonly patterns = new Map<string, Set<Subscriber>>()

  /** Subscriptions of a subscriber, channels and patterns together (what Redis replies with). */
  static count(subscriber: Subscriber): number {
    return subscriber.channels.size + subscriber.patterns.size
  }

  subscribe(subscriber: Subscriber, channel: Buffer): void {
    this.add(this.channels, subscriber.channels, subscriber, key(channel))
  }

  unsubscribe(subscriber: Subscriber, channel: Buffer): void {
    this.delete(this.channels, subscriber.channels, subscriber, key(channel))
  }

  psubscribe(subscriber: Subscriber, pattern: Buffer): void {
    this.add(this.patterns, subscriber.patterns, subscriber, key(pattern))
  }

  punsubscribe(subscriber: Subscriber, pattern: Buffer): void {
    this.delete(this.patterns, subscriber.patterns, subscriber, key(pattern))
  }

  /** Drops every subscription of a connection that has gone. */
  remove(subscriber: Subscriber): void {
    for (const channel of [...subscriber.channels]) this.delete(this.channels, subscriber.channels, subscriber, channel)
    for (const pattern of [...subscriber.patterns]) this.delete(this.patterns, subscriber.patterns, subscriber, pattern)
  }

  /** PUBLISH: delivers to channel and pattern subscribers; returns how many deliveries were made. */
  publish(channel: Buffer, message: Buffer): number {
    const name = key(channel)
    let receivers = 0
    const direct = this.channels.get(name)
    if (direct !== undefined && direct.size > 0) {
      const encoded = Resp.encode(Resp.array([Resp.bulk("message"), Resp.bulk(channel), Resp.bulk(message)]))
      for (const subscriber of [...direct]) {
        subscriber.deliver(encoded)
        receivers++
      }
    }
    for (const [pattern, subscribers] of this.patterns) {
      if (!globMatch(pattern, name)) continue
      const encoded = Resp.encode(
        Resp.array([Resp.bulk("pmessage"), Resp.bulk(Buffer.from(pattern, "latin1")), Resp.bulk(channel), Resp.bulk(message)])
      )
      for (const subscriber of [...subscribers]) {
        subscriber.deliver(encoded)
        receivers++
      }
    }
    return receivers
  }

  private add(index: Map<string, Set<Subscriber>>, own: Set<string>, subscriber: Subscriber, name: string): void {
    own.add(name)
    let subscribers = index.get(name)
    if (subscribers === undefined) {
      subscribers = new Set()
      index.set(name, subscribers)
    }
    subscribers.add(subscriber)
  }

  private delete(index: Map<string, Set<Subscriber>>, own: Set<string>, subscriber: Subscriber, name: string): void {
    own.delete(name)
    const subscribers = index.get(name)
    if (subscribers === undefined) return
    subscribers.delete(subscriber)
    if (subscribers.size === 0) index.delete(name)
  }
}
