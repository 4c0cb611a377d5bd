/**
 * RESP2, the Redis serialization protocol: frames, their encoding, and an incremental reader of requests.
 *
 * A client sends commands as arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or, from a
 * terminal, as inline lines (`GET k\r\n`), and may pipeline many in one write. `RequestReader` takes the
 * bytes as they arrive, in chunks split anywhere, and yields every complete command in order. Unlike
 * mini-redis, every input has a bound, with Redis's own limits and wording: a bulk longer than
 * `maxBulkLength` (512 MB), an array of more than `maxMultibulkLength` elements, or an inline line longer
 * than `maxInlineLength` (64 KiB) is a `ProtocolError`, after which the connection is closed, as Redis
 * does. Bytes of a command not yet complete are kept; nothing is buffered past what a command may hold.
 *
 * `decodeFrame` reads any RESP2 frame (replies included); `encode` writes one.
 */
import * as Data from "effect/Data"

/** A RESP2 value. Bulk strings are bytes; a null bulk string or array is RESP2's nil. */
export type Frame =
  | { readonly _tag: "Simple"; readonly value: string }
  | { readonly _tag: "Error"; readonly message: string }
  | { readonly _tag: "Integer"; readonly value: number | bigint }
  | { readonly _tag: "Bulk"; readonly value: Buffer | null }
  | { readonly _tag: "Array"; readonly items: ReadonlyArray<Frame> | null }

export const simple = (value: string): Frame => ({ _tag: "Simple", value })
export const error = (message: string): Frame => ({ _tag: "Error", message })
export const integer = (value: number | bigint): Frame => ({ _tag: "Integer", value })
export const bulk = (value: Buffer | string | null): Frame => ({
  _tag: "Bulk",
  value: typeof value === "string" ? Buffer.from(value) : value
})
export const array = (items: ReadonlyArray<Frame> | null): Frame => ({ _tag: "Array", items })
export const ok = simple("OK")
export const nil = bulk(null)

/** Input that breaks the protocol or its limits; the message is Redis's (`Protocol error: …`). */
export class ProtocolError extends Data.TaggedError("ProtocolError")<{ readonly reason: string }> {
  override get message() {
    return `Protocol error: ${this.reason}`
  }
}

export interface Limits {
  /** Longest bulk string. Default 512 MB (Redis's proto-max-bulk-len). */
  readonly maxBulkLength: number
  /** Most elements in one array. Default 1,048,576. */
  readonly maxMultibulkLength: number
  /** Longest inline command, and longest header line. Default 64 KiB (Redis's PROTO_INLINE_MAX_SIZE). */
  readonly maxInlineLength: number
}

export const defaultLimits: Limits = {
  maxBulkLength: 512 * 1024 * 1024,
  maxMultibulkLength: 1024 * 1024,
  maxInlineLength: 64 * 1024
}

const CR = 13
const LF = 10

// ---------------------------------------------------------------------------------------------------------
// Encoding

/**
 * Encodes frames into one growing buffer: a batch of replies becomes a single write, with no intermediate
 * buffer per header or per reply.
 */
export class Writer {
  private buffer = Buffer.allocUnsafe(4096)
  private length = 0

  /** Bytes written since the last `take`. */
  get size(): number {
    return this.length
  }

  private room(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return
    const grown = Buffer.allocUnsafe(Math.max(2 * this.buffer.length, this.length + bytes))
    this.buffer.copy(grown, 0, 0, this.length)
    this.buffer = grown
  }

  private text(value: string, encoding: "latin1" | "utf8"): void {
    this.room(encoding === "latin1" ? value.length : Buffer.byteLength(value, "utf8"))
    this.length += this.buffer.write(value, this.length, encoding)
  }

  private bytes(value: Buffer): void {
    this.room(value.length)
    this.length += value.copy(this.buffer, this.length)
  }

  /** A type byte, `text` and CRLF. */
  private line(type: number, text: string, encoding: "latin1" | "utf8"): void {
    this.room(1)
    this.buffer[this.length++] = type
    this.text(text, encoding)
    this.crlf()
  }

  private crlf(): void {
    this.room(2)
    this.buffer[this.length++] = CR
    this.buffer[this.length++] = LF
  }

  frame(frame: Frame): void {
    switch (frame._tag) {
      case "Simple":
        return this.line(0x2b /* + */, frame.value, "utf8")
      case "Error":
        return this.line(0x2d /* - */, frame.message, "utf8")
      case "Integer":
        return this.line(0x3a /* : */, String(frame.value), "latin1")
      case "Bulk":
        if (frame.value === null) return this.text("$-1\r\n", "latin1")
        this.line(0x24 /* $ */, String(frame.value.length), "latin1")
        this.bytes(frame.value)
        return this.crlf()
      case "Array":
        if (frame.items === null) return this.text("*-1\r\n", "latin1")
        this.line(0x2a /* * */, String(frame.items.length), "latin1")
        for (const item of frame.items) this.frame(item)
    }
  }

  /** Everything written so far, as a buffer of its own; the writer starts empty again. */
  take(): Buffer {
    const written = Buffer.from(this.buffer.subarray(0, this.length))
    this.length = 0
    return written
  }
}

/** The bytes of one frame. */
export const encode = (frame: Frame): Buffer => {
  const writer = new Writer()
  writer.frame(frame)
  return writer.take()
}

/** A command as a client library sends it: an array of bulk strings. */
export const encodeCommand = (args: ReadonlyArray<string | Buffer>): Buffer =>
  encode(array(args.map((arg) => bulk(arg))))

// ---------------------------------------------------------------------------------------------------------
// Decoding

/** Not enough bytes yet. */
const incomplete = Symbol("incomplete")
type Incomplete = typeof incomplete

interface Decoded<A> {
  readonly value: A
  /** Offset just past it. */
  readonly next: number
}

/** Where the line starting at `offset` ends (its LF), or incomplete; a line longer than the limit is an error. */
const lineEnd = (buffer: Buffer, offset: number, limits: Limits, tooLong: string): number | Incomplete => {
  const end = buffer.indexOf(LF, offset)
  if (end < 0) {
    if (buffer.length - offset > limits.maxInlineLength) throw new ProtocolError({ reason: tooLong })
    return incomplete
  }
  if (end - offset > limits.maxInlineLength) throw new ProtocolError({ reason: tooLong })
  return end
}

/** Where a line's text stops: before its CR, if it has one. */
const textEnd = (buffer: Buffer, offset: number, end: number) =>
  end > offset && buffer[end - 1] === CR ? end - 1 : end

/** The line starting at `offset` (without CRLF), or incomplete; a line longer than the limit is an error. */
const readLine = (
  buffer: Buffer,
  offset: number,
  limits: Limits,
  tooLong: string,
  encoding: "latin1" | "utf8" = "latin1"
): Decoded<string> | Incomplete => {
  const end = lineEnd(buffer, offset, limits, tooLong)
  if (end === incomplete) return incomplete
  return { value: buffer.toString(encoding, offset, textEnd(buffer, offset, end)), next: end + 1 }
}

/** An integer header (`*3`, `$5`, `:42`), as Redis's string2ll reads it. */
const parseInteger = (text: string): number | undefined =>
  /^-?\d{1,19}$/.test(text) ? Number(text) : undefined

/**
 * The integer of the header line starting at `offset` (after its type byte), read from the bytes as
 * `parseInteger` reads the text: an optional `-` and 1 to 19 digits, else undefined. Every command has
 * one of these per argument, so no string is made for it.
 */
const readHeader = (
  buffer: Buffer,
  offset: number,
  limits: Limits,
  tooLong: string
): Decoded<number | undefined> | Incomplete => {
  const end = lineEnd(buffer, offset, limits, tooLong)
  if (end === incomplete) return incomplete
  const stop = textEnd(buffer, offset, end)
  const negative = buffer[offset] === 0x2d
  const first = negative ? offset + 1 : offset
  if (stop - first < 1 || stop - first > 19) return { value: undefined, next: end + 1 }
  let value = 0
  for (let index = first; index < stop; index++) {
    const digit = buffer[index]! - 0x30
    if (digit < 0 || digit > 9) return { value: undefined, next: end + 1 }
    value = value * 10 + digit
  }
  return { value: negative ? -value : value, next: end + 1 }
}

const readBulkBody = (buffer: Buffer, offset: number, length: number): Decoded<Buffer> | Incomplete => {
  if (buffer.length < offset + length + 2) return incomplete
  if (buffer[offset + length] !== CR || buffer[offset + length + 1] !== LF) {
    throw new ProtocolError({ reason: "bulk string not terminated by CRLF" })
  }
  return { value: Buffer.from(buffer.subarray(offset, offset + length)), next: offset + length + 2 }
}

const readBulkLength = (buffer: Buffer, offset: number, limits: Limits): Decoded<number> | Incomplete => {
  const line = readHeader(buffer, offset + 1, limits, "too big bulk count string")
  if (line === incomplete) return incomplete
  const length = line.value
  if (length === undefined || length < -1 || length > limits.maxBulkLength) {
    throw new ProtocolError({ reason: "invalid bulk length" })
  }
  return { value: length, next: line.next }
}

const readArrayLength = (buffer: Buffer, offset: number, limits: Limits): Decoded<number> | Incomplete => {
  const line = readHeader(buffer, offset + 1, limits, "too big mbulk count string")
  if (line === incomplete) return incomplete
  const length = line.value
  if (length === undefined || length > limits.maxMultibulkLength) {
    throw new ProtocolError({ reason: "invalid multibulk length" })
  }
  return { value: Math.max(length, -1), next: line.next }
}

const decodeAt = (buffer: Buffer, offset: number, limits: Limits): Decoded<Frame> | Incomplete => {
  if (offset >= buffer.length) return incomplete
  const type = buffer[offset]
  switch (type) {
    case 0x2b /* + */:
    case 0x2d /* - */:
    case 0x3a /* : */: {
      // Simple strings and errors are text, written as UTF-8 by `encode`.
      const line = readLine(buffer, offset + 1, limits, "too big inline request", "utf8")
      if (line === incomplete) return incomplete
      if (type === 0x2b) return { value: simple(line.value), next: line.next }
      if (type === 0x2d) return { value: error(line.value), next: line.next }
      const value = parseInteger(line.value)
      if (value === undefined) throw new ProtocolError({ reason: "invalid integer" })
      return { value: integer(value), next: line.next }
    }
    case 0x24 /* $ */: {
      const length = readBulkLength(buffer, offset, limits)
      if (length === incomplete) return incomplete
      if (length.value < 0) return { value: nil, next: length.next }
      const body = readBulkBody(buffer, length.next, length.value)
      return body === incomplete ? incomplete : { value: bulk(body.value), next: body.next }
    }
    case 0x2a /* * */: {
      const length = readArrayLength(buffer, offset, limits)
      if (length === incomplete) return incomplete
      if (length.value < 0) return { value: array(null), next: length.next }
      const items: Array<Frame> = []
      let next = length.next
      for (let index = 0; index < length.value; index++) {
        const item = decodeAt(buffer, next, limits)
        if (item === incomplete) return incomplete
        items.push(item.value)
        next = item.next
      }
      return { value: array(items), next }
    }
    default:
      throw new ProtocolError({ reason: `unknown frame type '${String.fromCharCode(type!)}'` })
  }
}

/**
 * The first complete frame in `buffer` and the offset just past it; undefined when more bytes are needed.
 * Throws `ProtocolError` on malformed input.
 */
export const decodeFrame = (
  buffer: Buffer,
  limits: Limits = defaultLimits
): { readonly frame: Frame; readonly next: number } | undefined => {
  const decoded = decodeAt(buffer, 0, limits)
  return decoded === incomplete ? undefined : { frame: decoded.value, next: decoded.next }
}

// ---------------------------------------------------------------------------------------------------------
// Requests

const escapes: Record<string, string> = { n: "\n", r: "\r", t: "\t", b: "\b", a: "\x07" }

/** Splits an inline command line into arguments as Redis's sdssplitargs does (quotes and escapes). */
export const splitInline = (line: string): Array<Buffer> => {
  const args: Array<Buffer> = []
  let index = 0
  const hex = (char: string | undefined) => char !== undefined && /^[0-9a-fA-F]$/.test(char)
  while (true) {
    while (index < line.length && /\s/.test(line[index]!)) index++
    if (index >= line.length) return args
    const bytes: Array<number> = []
    let quote: "\"" | "'" | undefined
    while (true) {
      const char = line[index]
      if (quote === undefined) {
        if (char === undefined || /\s/.test(char)) break
        if (char === "\"" || char === "'") quote = char
        else bytes.push(char.charCodeAt(0))
        index++
        continue
      }
      if (char === undefined) throw new ProtocolError({ reason: "unbalanced quotes in request" })
      if (char === quote) {
        // A closing quote must be followed by a space or the end.
        const after = line[index + 1]
        if (after !== undefined && !/\s/.test(after)) throw new ProtocolError({ reason: "unbalanced quotes in request" })
        index++
        break
      }
      const escape = char === "\\" ? line[index + 1] : undefined
      if (quote === "'" || escape === undefined) {
        // In single quotes only \' is an escape.
        if (quote === "'" && escape === "'") {
          bytes.push(0x27)
          index += 2
        } else {
          bytes.push(char.charCodeAt(0))
          index++
        }
      } else if (escape === "x" && hex(line[index + 2]) && hex(line[index + 3])) {
        bytes.push(parseInt(line.slice(index + 2, index + 4), 16))
        index += 4
      } else {
        bytes.push((escapes[escape] ?? escape).charCodeAt(0))
        index += 2
      }
    }
    args.push(Buffer.from(bytes))
  }
}

/**
 * An argument to keep (a stored value): itself, or a copy when it is a view that would otherwise hold on to
 * more than 8 KiB of other bytes received with it.
 */
export const detach = (argument: Buffer): Buffer =>
  argument.buffer.byteLength - argument.length > 8192 ? Buffer.from(argument) : argument

/** Where the reader is inside a multibulk command whose bytes have not all arrived. */
interface PartialCommand {
  /** Arguments still to read. */
  remaining: number
  readonly args: Array<Buffer>
  /** The argument being read, once its `$length` line has arrived: `size` bytes with CRLF, `filled` so far. */
  body: Buffer | undefined
  size: number
  filled: number
}

/** First room given to an argument; it grows (doubling) only as its bytes arrive, never past its size. */
const initialArgumentRoom = 64 * 1024

/**
 * Reads commands from a connection's bytes. `push` each chunk as it arrives, then take `next()` until it
 * returns undefined (more bytes needed). Malformed input throws a `ProtocolError`; the connection should
 * answer it and close, as Redis does.
 *
 * Like Redis's query buffer it keeps where it is inside a multibulk command between reads: an argument's
 * bytes are moved into a buffer of their own as they arrive, so a large value sent in many chunks costs
 * linear time. That buffer grows with the bytes received, not with the length a client declares, so a
 * header promising 512 MB holds only what was actually sent. An argument that arrived whole is a view of
 * the bytes received: a command that keeps one past its execution keeps `detach(argument)` instead.
 */
export class RequestReader {
  private buffer: Buffer = Buffer.alloc(0)
  private offset = 0
  private partial: PartialCommand | undefined
  private readonly limits: Limits

  constructor(limits: Limits = defaultLimits) {
    this.limits = limits
  }

  /** Bytes received and not yet returned as part of a command. */
  get pending(): number {
    const partial = this.partial
    const inPartial = partial === undefined
      ? 0
      : partial.args.reduce((sum, arg) => sum + arg.length, 0) + partial.filled
    return this.buffer.length - this.offset + inPartial
  }

  push(chunk: Buffer): void {
    // The unread rest is small: an argument's bytes are moved out as soon as they arrive.
    this.buffer = this.offset === this.buffer.length
      ? chunk
      : Buffer.concat([this.buffer.subarray(this.offset), chunk])
    this.offset = 0
  }

  /** The next complete command (its arguments), or undefined until more bytes arrive. Empty commands are skipped. */
  next(): ReadonlyArray<Buffer> | undefined {
    while (this.partial !== undefined || this.offset < this.buffer.length) {
      const command = this.partial !== undefined || this.buffer[this.offset] === 0x2a
        ? this.multibulk()
        : this.inline()
      if (command === undefined) return undefined
      if (command.length > 0) return command
    }
    return undefined
  }

  private inline(): ReadonlyArray<Buffer> | undefined {
    const line = readLine(this.buffer, this.offset, this.limits, "too big inline request")
    if (line === incomplete) return undefined
    this.offset = line.next
    return splitInline(line.value)
  }

  private multibulk(): ReadonlyArray<Buffer> | undefined {
    let partial = this.partial
    if (partial === undefined) {
      const length = readArrayLength(this.buffer, this.offset, this.limits)
      if (length === incomplete) return undefined
      this.offset = length.next
      if (length.value <= 0) return []
      partial = { remaining: length.value, args: [], body: undefined, size: 0, filled: 0 }
      this.partial = partial
    }
    while (partial.remaining > 0) {
      if (partial.body === undefined) {
        if (this.offset >= this.buffer.length) return undefined
        const type = this.buffer[this.offset]!
        if (type !== 0x24) throw new ProtocolError({ reason: `expected '$', got '${String.fromCharCode(type)}'` })
        const length = readBulkLength(this.buffer, this.offset, this.limits)
        if (length === incomplete) return undefined
        if (length.value < 0) throw new ProtocolError({ reason: "invalid bulk length" })
        this.offset = length.next
        const end = this.offset + length.value
        if (end + 2 <= this.buffer.length) {
          // The whole argument is here: it is a view of the bytes received, not a copy.
          if (this.buffer[end] !== CR || this.buffer[end + 1] !== LF) {
            throw new ProtocolError({ reason: "bulk string not terminated by CRLF" })
          }
          partial.args.push(this.buffer.subarray(this.offset, end))
          this.offset = end + 2
          partial.remaining--
          continue
        }
        partial.size = length.value + 2
        partial.body = Buffer.allocUnsafe(Math.min(partial.size, initialArgumentRoom))
        partial.filled = 0
      }
      const arriving = Math.min(this.buffer.length - this.offset, partial.size - partial.filled)
      if (partial.filled + arriving > partial.body.length) {
        const grown = Buffer.allocUnsafe(Math.min(partial.size, Math.max(2 * partial.body.length, partial.filled + arriving)))
        partial.body.copy(grown, 0, 0, partial.filled)
        partial.body = grown
      }
      const body = partial.body
      this.buffer.copy(body, partial.filled, this.offset, this.offset + arriving)
      partial.filled += arriving
      this.offset += arriving
      if (partial.filled < partial.size) return undefined
      if (body[partial.size - 2] !== CR || body[partial.size - 1] !== LF) {
        throw new ProtocolError({ reason: "bulk string not terminated by CRLF" })
      }
      partial.args.push(body.subarray(0, partial.size - 2))
      partial.body = undefined
      partial.remaining--
    }
    this.partial = undefined
    return partial.args
  }
}
