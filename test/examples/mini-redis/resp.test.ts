/**
 * The RESP2 codec of the mini-redis example: any frame survives encode → decodeFrame; a RequestReader fed a
 * stream of multibulk and inline commands cut at arbitrary points yields exactly those commands in order;
 * inline quoting follows Redis's sdssplitargs; limits and malformed input fail with Redis's wording; and a
 * declared bulk length reserves nothing until its bytes arrive.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import {
  array,
  bulk,
  decodeFrame,
  detach,
  encode,
  encodeCommand,
  error,
  type Frame,
  integer,
  ProtocolError,
  RequestReader,
  simple
} from "../../../examples/mini-redis/resp.js"
import { PropertyRuns } from "keel/testing"


// ---------------------------------------------------------------------------------------------------------
// Helpers

/** A frame with its bulk strings as hex, so frames compare by bytes. */
type Plain =
  | { readonly _tag: "Simple"; readonly value: string }
  | { readonly _tag: "Error"; readonly message: string }
  | { readonly _tag: "Integer"; readonly value: number | bigint }
  | { readonly _tag: "Bulk"; readonly hex: string | null }
  | { readonly _tag: "Array"; readonly items: ReadonlyArray<Plain> | null }

const plain = (frame: Frame): Plain => {
  switch (frame._tag) {
    case "Bulk":
      return { _tag: "Bulk", hex: frame.value === null ? null : frame.value.toString("hex") }
    case "Array":
      return { _tag: "Array", items: frame.items === null ? null : frame.items.map(plain) }
    default:
      return frame
  }
}

const hex = (args: ReadonlyArray<Buffer>): Array<string> => args.map((arg) => arg.toString("hex"))
const text = (args: ReadonlyArray<Buffer>): Array<string> => args.map((arg) => arg.toString("latin1"))

/** `bytes` cut at the given offsets (taken modulo its length + 1, so any number is a valid cut). */
const cutAt = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Buffer> = []
  let start = 0
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.subarray(start, point))
    start = point
  }
  return chunks
}

/** Pushes each chunk into one reader, taking every command available after each push. */
const readAll = (reader: RequestReader, chunks: ReadonlyArray<Buffer>): Array<ReadonlyArray<Buffer>> => {
  const commands: Array<ReadonlyArray<Buffer>> = []
  for (const chunk of chunks) {
    reader.push(chunk)
    for (let command = reader.next(); command !== undefined; command = reader.next()) commands.push(command)
  }
  return commands
}

/** A reader holding `input`, for a single `next()` expected to fail. */
const readerWith = (input: string, reader = new RequestReader()) => {
  reader.push(Buffer.from(input, "latin1"))
  return reader
}

const expectProtocolError = (f: () => unknown, message: string) => {
  let thrown: unknown
  try {
    f()
  } catch (e) {
    thrown = e
  }
  expect(thrown).toBeInstanceOf(ProtocolError)
  expect((thrown as ProtocolError).message).toBe(message)
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries

/** A line's text: any Unicode without CR or LF (sent as UTF-8). */
const lineText = fc.string({ unit: "grapheme", maxLength: 20 }).filter((text) => !/[\r\n]/.test(text))

const bytes = fc.uint8Array({ maxLength: 40 }).map((array) => Buffer.from(array))

const { frame: frameArbitrary } = fc.letrec<{ frame: Frame }>((tie) => ({
  frame: fc.oneof(
    { depthSize: "small", maxDepth: 3, withCrossShrink: true },
    lineText.map(simple),
    lineText.map(error),
    fc.maxSafeInteger().map(integer),
    fc.option(bytes, { nil: null }).map(bulk),
    fc.option(fc.array(tie("frame"), { maxLength: 4 }), { nil: null }).map(array)
  )
}))

/** A multibulk command: 1–5 arguments of arbitrary bytes. */
const commandArbitrary = fc.array(bytes, { minLength: 1, maxLength: 5 })

const cutsArbitrary = fc.array(fc.nat(), { maxLength: 12 })

/** An inline command: its arguments (letters and digits), the spaces after each, and its line ending. */
const inlineArbitrary = fc.record({
  args: fc.array(fc.stringMatching(/^[A-Za-z0-9]{1,8}$/), { minLength: 1, maxLength: 5 }),
  spaces: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 4, maxLength: 4 }),
  ending: fc.constantFrom("\r\n", "\n")
})

const inlineLine = ({ args, ending, spaces }: typeof inlineArbitrary extends fc.Arbitrary<infer A> ? A : never) =>
  args.map((arg, index) => index === 0 ? arg : " ".repeat(spaces[index - 1]!) + arg).join("") + ending

// ---------------------------------------------------------------------------------------------------------

describe("RESP2 frames", () => {
  it.prop(
    "decodeFrame(encode(frame)) is the frame, ending just past its bytes",
    { frame: frameArbitrary },
    ({ frame }) => {
      const encoded = encode(frame)
      const decoded = decodeFrame(encoded)
      expect(decoded).toBeDefined()
      expect(plain(decoded!.frame)).toEqual(plain(frame))
      expect(decoded!.next).toBe(encoded.length)
    },
    PropertyRuns.fastCheck(20_261_301)
  )
})

describe("RequestReader", () => {
  it.prop(
    "multibulk commands cut at arbitrary points come out whole and in order",
    { commands: fc.array(commandArbitrary, { maxLength: 8 }), cuts: cutsArbitrary },
    ({ commands, cuts }) => {
      const reader = new RequestReader()
      const stream = Buffer.concat(commands.map(encodeCommand))
      expect(readAll(reader, cutAt(stream, cuts)).map(hex)).toEqual(commands.map(hex))
      expect(reader.pending).toBe(0)
    },
    PropertyRuns.fastCheck(20_261_302)
  )

  it.prop(
    "inline commands cut at arbitrary points parse to their arguments",
    { commands: fc.array(inlineArbitrary, { minLength: 1, maxLength: 6 }), cuts: cutsArbitrary },
    ({ commands, cuts }) => {
      const reader = new RequestReader()
      const stream = Buffer.from(commands.map(inlineLine).join(""))
      expect(readAll(reader, cutAt(stream, cuts)).map(text)).toEqual(commands.map((command) => command.args))
      expect(reader.pending).toBe(0)
    },
    PropertyRuns.fastCheck(20_261_303)
  )

  it.prop(
    "a stream mixing inline and multibulk commands keeps their order",
    {
      commands: fc.array(
        fc.oneof(
          inlineArbitrary.map((inline) => ({ bytes: Buffer.from(inlineLine(inline)), args: inline.args })),
          commandArbitrary.map((args) => ({ bytes: encodeCommand(args), args: text(args) }))
        ),
        { maxLength: 8 }
      ),
      cuts: cutsArbitrary
    },
    ({ commands, cuts }) => {
      const reader = new RequestReader()
      const stream = Buffer.concat(commands.map((command) => command.bytes))
      expect(readAll(reader, cutAt(stream, cuts)).map(text)).toEqual(commands.map((command) => command.args))
      expect(reader.pending).toBe(0)
    },
    PropertyRuns.fastCheck(20_261_304)
  )

  describe("inline quoting, as sdssplitargs", () => {
    it("double and single quotes group words; \\' escapes a single quote", () => {
      expect(readerWith(`SET "a b" 'c\\'d'\r\n`).next()?.map(String)).toEqual(["SET", "a b", "c'd"])
    })

    it("double quotes take \\xHH and \\n escapes", () => {
      expect(readerWith(`SET k "\\x41\\n"\r\n`).next()?.map(String)).toEqual(["SET", "k", "A\n"])
    })

    it("an unbalanced quote is a protocol error", () => {
      const message = "Protocol error: unbalanced quotes in request"
      expectProtocolError(() => readerWith(`SET "a b\r\n`).next(), message)
      expectProtocolError(() => readerWith(`SET 'a\r\n`).next(), message)
      expectProtocolError(() => readerWith(`SET "a"b\r\n`).next(), message)
    })

    it("an empty line and an empty array are skipped", () => {
      const reader = readerWith("\r\n*0\r\nPING\r\n")
      expect(reader.next()?.map(String)).toEqual(["PING"])
      expect(reader.next()).toBeUndefined()
      expect(reader.pending).toBe(0)
    })
  })

  describe("limits and malformed input, in Redis's wording", () => {
    const small = () => new RequestReader({ maxBulkLength: 10, maxMultibulkLength: 3, maxInlineLength: 16 })

    it("a bulk longer than maxBulkLength", () => {
      expect(readerWith("*1\r\n$10\r\n0123456789\r\n", small()).next()?.map(String)).toEqual(["0123456789"])
      expectProtocolError(() => readerWith("*1\r\n$11\r\n", small()).next(), "Protocol error: invalid bulk length")
    })

    it("an array longer than maxMultibulkLength", () => {
      expect(readerWith("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", small()).next()?.map(String)).toEqual([
        "a",
        "b",
        "c"
      ])
      expectProtocolError(() => readerWith("*4\r\n", small()).next(), "Protocol error: invalid multibulk length")
    })

    it("an inline line longer than maxInlineLength, still without its newline", () => {
      const reader = small()
      reader.push(Buffer.from("A".repeat(16)))
      expect(reader.next()).toBeUndefined()
      reader.push(Buffer.from("A"))
      expectProtocolError(() => reader.next(), "Protocol error: too big inline request")
    })

    it("an argument that is not a bulk string", () => {
      expectProtocolError(() => readerWith("*1\r\n:5\r\n", small()).next(), "Protocol error: expected '$', got ':'")
    })

    it("a bulk body not followed by CRLF", () => {
      let thrown: unknown
      try {
        readerWith("*1\r\n$3\r\nabcXY", small()).next()
      } catch (e) {
        thrown = e
      }
      expect(thrown).toBeInstanceOf(ProtocolError)
    })

    it("a null bulk inside a request", () => {
      expectProtocolError(() => readerWith("*1\r\n$-1\r\n", small()).next(), "Protocol error: invalid bulk length")
    })

    it("a length header is an optional '-' and 1 to 19 digits, CR optional", () => {
      expect(readerWith("*1\n$2\nhi\r\n").next()?.map(String)).toEqual(["hi"])
      expect(readerWith("*1\r\n$02\r\nhi\r\n").next()?.map(String)).toEqual(["hi"])
      for (const header of ["$+2", "$2x", "$", "$ 2", "$-", "$--1", "$12345678901234567890"]) {
        expectProtocolError(() => readerWith(`*1\r\n${header}\r\nhi\r\n`).next(), "Protocol error: invalid bulk length")
      }
      for (const header of ["*+1", "*1x", "*", "*12345678901234567890"]) {
        expectProtocolError(() => readerWith(`${header}\r\n$2\r\nhi\r\n`).next(), "Protocol error: invalid multibulk length")
      }
      expect(readerWith("*-1\r\nPING\r\n").next()?.map(String)).toEqual(["PING"])
    })
  })

  describe("memory", () => {
    it("an argument that arrived whole is a view of the chunk; detach copies one that would pin the chunk", () => {
      const value = Buffer.from("v".repeat(100))
      const chunk = Buffer.concat([encodeCommand([Buffer.from("SET"), Buffer.from("k"), value]), Buffer.alloc(64 * 1024)])
      const reader = new RequestReader()
      reader.push(chunk.subarray(0, chunk.length - 64 * 1024))
      const argument = reader.next()![2]!
      expect(argument.equals(value)).toBe(true)
      expect(argument.buffer).toBe(chunk.buffer)
      const kept = detach(argument)
      expect(kept.equals(value)).toBe(true)
      expect(kept.buffer).not.toBe(chunk.buffer)
      expect(kept.buffer.byteLength).toBeLessThanOrEqual(8192)
      // A buffer with little around it is kept as it is.
      const own = Buffer.from("own value")
      expect(detach(own)).toBe(own)
    })

    it("a declared 100 MB bulk holds only the bytes sent", () => {
      const reader = readerWith("*1\r\n$100000000\r\n0123456789")
      expect(reader.next()).toBeUndefined()
      expect(reader.pending).toBeLessThan(1000)
    })

    it("a 1 MB argument sent in 1-KiB chunks comes back intact", () => {
      const argument = Buffer.alloc(1024 * 1024)
      for (let index = 0; index < argument.length; index++) argument[index] = (index * 31 + (index >> 10)) & 0xff
      const stream = encodeCommand([Buffer.from("SET"), Buffer.from("k"), argument])
      const reader = new RequestReader()
      const commands: Array<ReadonlyArray<Buffer>> = []
      for (let start = 0; start < stream.length; start += 1024) {
        reader.push(stream.subarray(start, start + 1024))
        const command = reader.next()
        if (command !== undefined) commands.push(command)
        expect(reader.pending).toBeLessThanOrEqual(start + 1024)
      }
      expect(commands).toHaveLength(1)
      expect(String(commands[0]![0])).toBe("SET")
      expect(String(commands[0]![1])).toBe("k")
      expect(commands[0]![2]!.equals(argument)).toBe(true)
      expect(reader.pending).toBe(0)
    })
  })
})
