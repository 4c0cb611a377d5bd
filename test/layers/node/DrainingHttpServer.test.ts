/**
 * The draining HTTP server's request path on a real server (127.0.0.1, a port the OS picks) and real
 * clients (fetch, node:http): buffered and streamed responses, HEAD, suspending apps, defects, bodies over
 * the limit, the stats it keeps, and a client that goes away while the app is still working.
 */
import { HttpServer, HttpServerError, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Equal, FiberRef, HashSet, Layer, Logger, LogLevel, Option, Stream } from "effect"
import type { FiberId } from "effect"
import { Lifecycle } from "keel"
import { DrainingHttpServer } from "keel/node"
import * as Http from "node:http"
import * as Net from "node:net"
import { eventually } from "../../support/eventually.js"

/** Serves `app` on the draining server for the rest of the scope. */
const serve = <E>(app: HttpApp.Default<E, never>, options: DrainingHttpServer.Options = {}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      HttpServer.serve(app).pipe(
        Layer.provideMerge(DrainingHttpServer.layer(options)),
        Layer.provideMerge(Lifecycle.layer({ drainTimeout: "5 seconds" }))
      )
    )
    const server = Context.get(context, DrainingHttpServer.DrainingHttpServer)
    return { url: `http://127.0.0.1:${server.address.port}`, server }
  })

const request = (url: string, init: RequestInit = {}) =>
  Effect.promise(async () => {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) })
    return { status: response.status, headers: response.headers, body: await response.text() }
  })


const encoder = new TextEncoder()

describe("DrainingHttpServer", () => {
  it.scopedLive("a buffered response keeps its status, headers and body", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(Effect.succeed(
        HttpServerResponse.text("created", { status: 201, headers: { "x-request-kind": "buffered" } })
      ))
      const response = yield* request(url)
      expect(response.status).toBe(201)
      expect(response.body).toBe("created")
      expect(response.headers.get("content-type")).toMatch(/^text\/plain/)
      expect(response.headers.get("x-request-kind")).toBe("buffered")

      const json = yield* serve(Effect.succeed(
        HttpServerResponse.unsafeJson({ id: 7, tags: ["a", "b"] }, { status: 202, headers: { "x-id": "7" } })
      ))
      const jsonResponse = yield* request(json.url)
      expect(jsonResponse.status).toBe(202)
      expect(jsonResponse.headers.get("content-type")).toBe("application/json")
      expect(jsonResponse.headers.get("x-id")).toBe("7")
      expect(JSON.parse(jsonResponse.body)).toEqual({ id: 7, tags: ["a", "b"] })
    }))

  it.scopedLive("buffered bodies arrive byte for byte: binary and UTF-8, views into larger buffers, either side of the size joined to the head", () =>
    Effect.gen(function*() {
      const pattern = (length: number, offset = 0) => Uint8Array.from({ length }, (_, index) => (index * 7 + offset) % 256)
      const backing = pattern(1024, 3)
      const bodies: Record<string, Uint8Array> = {
        "/every-byte": Uint8Array.from({ length: 256 }, (_, index) => index),
        "/utf8": encoder.encode("ünïcødé ✓ 日本 🚀"),
        // A view that starts past the start of its buffer and ends before its end.
        "/view": backing.subarray(100, 300),
        "/largest-joined": pattern(16 * 1024),
        "/smallest-apart": pattern(16 * 1024 + 1),
        "/large": pattern(40_000),
        "/empty": new Uint8Array(0)
      }
      const { url } = yield* serve(Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
        HttpServerResponse.uint8Array(bodies[request.url]!, { contentType: "application/octet-stream" })))
      for (const [path, expected] of Object.entries(bodies)) {
        const received = yield* Effect.promise(async () => {
          const response = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(10_000) })
          return new Uint8Array(await response.arrayBuffer())
        })
        expect(received, path).toEqual(expected)
      }
    }))

  it.scopedLive("an app's context holds the server's services and its own request, and works as any Context", () =>
    Effect.gen(function*() {
      class Extra extends Context.Tag("test/Extra")<Extra, string>() {}
      const app = Effect.gen(function*() {
        const context = yield* Effect.context<never>()
        const request = yield* HttpServerRequest.HttpServerRequest
        const keys = [...context.unsafeMap.keys()]
        const added = Context.add(context, Extra, "added")
        const provided = yield* Effect.provideService(Extra, Extra, "provided")
        let writeRefused = false
        try {
          context.unsafeMap.set(Extra.key, "written")
        } catch {
          writeRefused = true
        }
        return HttpServerResponse.unsafeJson({
          url: request.url,
          lifecycle: Context.getOption(context, Lifecycle.Lifecycle)._tag,
          sameRequest: Context.unsafeGet(context, HttpServerRequest.HttpServerRequest) === request,
          requestKeys: keys.filter((key) => key === HttpServerRequest.HttpServerRequest.key).length,
          size: context.unsafeMap.size === keys.length && keys.length === [...context.unsafeMap.values()].length,
          added: Context.get(added, Extra) === "added" && added.unsafeMap.size === keys.length + 1 &&
            Context.unsafeGet(added, HttpServerRequest.HttpServerRequest) === request,
          provided,
          equalToCopy: Equal.equals(context, Context.unsafeMake(new Map(context.unsafeMap))),
          writeRefused
        })
      })
      const { url } = yield* serve(app)
      for (const path of ["/first", "/second"]) {
        const response = yield* request(`${url}${path}`)
        expect(JSON.parse(response.body)).toEqual({
          url: path,
          lifecycle: "Some",
          sameRequest: true,
          requestKeys: 1,
          size: true,
          added: true,
          provided: "provided",
          equalToCopy: true,
          writeRefused: true
        })
      }
    }))

  it.scopedLive("an app runs with the server's fiber refs: its loggers, log level and any FiberRef set around it", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const capture = Logger.make(({ message }) => {
        logged.push(String(message))
      })
      const tenant = FiberRef.unsafeMake("none")
      const app = Effect.gen(function*() {
        yield* Effect.logDebug("debug from the app")
        return HttpServerResponse.text(yield* FiberRef.get(tenant))
      })
      const { url } = yield* serve(app).pipe(
        Effect.locally(tenant, "acme"),
        Logger.withMinimumLogLevel(LogLevel.Debug),
        Effect.provide(Logger.replace(Logger.defaultLogger, capture))
      )
      const response = yield* request(url)
      expect(response.body).toBe("acme")
      expect(logged).toContain("debug from the app")
    }))

  it.scopedLive("a streamed body arrives complete", () =>
    Effect.gen(function*() {
      const chunks = ["first,", "second,", "third,", "fourth"]
      const body = Stream.fromIterable(chunks).pipe(
        Stream.tap(() => Effect.sleep("2 millis")),
        Stream.map((chunk) => encoder.encode(chunk))
      )
      const { url } = yield* serve(Effect.succeed(
        HttpServerResponse.stream(body, { status: 200, contentType: "text/plain", headers: { "x-streamed": "yes" } })
      ))
      const response = yield* request(url)
      expect(response.status).toBe(200)
      expect(response.headers.get("x-streamed")).toBe("yes")
      expect(response.body).toBe(chunks.join(""))
    }))

  it.scopedLive("HEAD gets the headers and no body, for buffered and streamed responses", () =>
    Effect.gen(function*() {
      const buffered = yield* serve(Effect.succeed(
        HttpServerResponse.text("not sent", { headers: { "x-head": "buffered" } })
      ))
      const head = yield* request(buffered.url, { method: "HEAD" })
      expect(head.status).toBe(200)
      expect(head.headers.get("x-head")).toBe("buffered")
      expect(head.headers.get("content-type")).toMatch(/^text\/plain/)
      expect(head.body).toBe("")

      const streamed = yield* serve(Effect.succeed(
        HttpServerResponse.stream(Stream.make(encoder.encode("not sent either")), { headers: { "x-head": "streamed" } })
      ))
      const streamedHead = yield* request(streamed.url, { method: "HEAD" })
      expect(streamedHead.status).toBe(200)
      expect(streamedHead.headers.get("x-head")).toBe("streamed")
      expect(streamedHead.body).toBe("")
    }))

  it.scopedLive("an app that suspends before answering is answered", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(
        Effect.as(Effect.sleep("20 millis"), HttpServerResponse.text("after a nap", { status: 203 }))
      )
      const response = yield* request(url)
      expect(response.status).toBe(203)
      expect(response.body).toBe("after a nap")
    }))

  it.scopedLive("a defect answers 500 and the next request is still served", () =>
    Effect.gen(function*() {
      const app = Effect.flatMap(HttpServerRequest.HttpServerRequest, (req) =>
        req.url === "/boom"
          ? Effect.die(new Error("boom"))
          : Effect.succeed(HttpServerResponse.text("still here")))
      const { url } = yield* serve(app)
      const failed = yield* request(`${url}/boom`)
      expect(failed.status).toBe(500)
      expect(failed.body).toBe("")
      const next = yield* request(`${url}/fine`)
      expect(next.status).toBe(200)
      expect(next.body).toBe("still here")
    }))

  it.scopedLive("a body over maxBodySize fails the read with a RequestError: 400 with connection: close", () =>
    Effect.gen(function*() {
      let failure: unknown
      const app = Effect.gen(function*() {
        const req = yield* HttpServerRequest.HttpServerRequest
        const text = yield* Effect.tapError(req.text, (error) => Effect.sync(() => (failure = error)))
        return HttpServerResponse.text(`read ${text.length}`)
      })
      const { url } = yield* serve(app, { maxBodySize: 16 })

      const small = yield* request(url, { method: "POST", body: "0123456789" })
      expect(small.status).toBe(200)
      expect(small.body).toBe("read 10")

      const large = yield* request(url, { method: "POST", body: "x".repeat(100) })
      expect(large.status).toBe(400)
      expect(large.headers.get("connection")).toBe("close")
      expect(failure).toBeInstanceOf(HttpServerError.RequestError)
    }))

  it.scopedLive("stats count served responses and show inFlight while a request runs", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      yield* Effect.addFinalizer(() => Deferred.succeed(release, undefined))
      const app = Effect.flatMap(HttpServerRequest.HttpServerRequest, (req) =>
        req.url === "/wait"
          ? Effect.as(Deferred.await(release), HttpServerResponse.text("released"))
          : Effect.succeed(HttpServerResponse.text("quick")))
      const { url, server } = yield* serve(app)
      expect(yield* server.stats).toMatchObject({ accepting: true, inFlight: 0, served: 0 })

      expect((yield* request(url)).status).toBe(200)
      expect((yield* request(url)).status).toBe(200)
      const afterTwo = yield* eventually(server.stats, (stats) => stats.served === 2)
      expect(afterTwo.inFlight).toBe(0)

      const waiting = yield* Effect.fork(request(`${url}/wait`))
      const busy = yield* eventually(server.stats, (stats) => stats.inFlight === 1)
      expect(busy.served).toBe(2)
      expect(busy.connections).toBeGreaterThanOrEqual(1)
      yield* Deferred.succeed(release, undefined)
      expect((yield* waiting).body).toBe("released")
      const done = yield* eventually(server.stats, (stats) => stats.served === 3 && stats.inFlight === 0)
      expect(done).toMatchObject({ inFlight: 0, served: 3 })
    }))

  it.scopedLive("a client that aborts interrupts the request's fiber", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interruptedBy = yield* Deferred.make<ReadonlyArray<FiberId.FiberId>>()
      const never = yield* Deferred.make<void>()
      const app = Deferred.succeed(started, undefined).pipe(
        Effect.zipRight(Deferred.await(never)),
        Effect.as(HttpServerResponse.text("never sent")),
        Effect.onInterrupt((interruptors) => Deferred.succeed(interruptedBy, [...HashSet.values(interruptors)]))
      )
      const { server, url } = yield* serve(app)

      const client = Http.request(`${url}/slow`)
      client.on("error", () => {}) // the abort below makes the request fail; that is expected
      client.end()
      yield* Deferred.await(started).pipe(Effect.timeout("5 seconds"), Effect.orDie)
      client.destroy()

      const interruptors = yield* Deferred.await(interruptedBy).pipe(Effect.timeout("5 seconds"), Effect.orDie)
      expect(interruptors.some((id) => Equal.equals(id, HttpServerError.clientAbortFiberId))).toBe(true)
      const after = yield* eventually(server.stats, (stats) => stats.inFlight === 0)
      expect(after.inFlight).toBe(0)
      expect(after.served).toBe(1)
    }))

  it.scopedLive("a small declared body is read before the app runs: a slow one is in flight meanwhile, then answered without the app suspending", () =>
    Effect.gen(function*() {
      const ranWith = yield* Deferred.make<string>()
      const app = Effect.flatMap(HttpServerRequest.HttpServerRequest, (req) =>
        Effect.flatMap(req.text, (text) =>
          Effect.as(Deferred.succeed(ranWith, text), HttpServerResponse.text(`got ${text}`))))
      const { server, url } = yield* serve(app)
      const { port } = new URL(url)
      const answer = yield* Effect.async<string>((resume) => {
        const socket = Net.connect(Number(port), "127.0.0.1")
        let received = ""
        socket.on("data", (chunk) => (received += chunk.toString()))
        socket.on("end", () => resume(Effect.succeed(received)))
        socket.write("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
        setTimeout(() => socket.write("world"), 300)
      }).pipe(Effect.fork)
      // The head has arrived, half the body has not: the request is in flight and the app has not run.
      const waiting = yield* eventually(server.stats, (stats) => stats.inFlight === 1)
      expect(waiting.served).toBe(0)
      expect(Option.isNone(yield* Deferred.poll(ranWith))).toBe(true)
      expect(yield* answer.await.pipe(Effect.flatten)).toMatch(/^HTTP\/1\.1 200 OK[\s\S]*\r\n\r\ngot helloworld$/)
      expect(yield* Deferred.await(ranWith)).toBe("helloworld")
      expect(yield* eventually(server.stats, (stats) => stats.inFlight === 0)).toMatchObject({ served: 1 })
    }))

  it.scopedLive("a client that leaves before its declared body arrives is no longer in flight, and the app never runs", () =>
    Effect.gen(function*() {
      const ran = yield* Deferred.make<void>()
      const { server, url } = yield* serve(Effect.as(Deferred.succeed(ran, undefined), HttpServerResponse.text("ok")))
      const socket = Net.connect(Number(new URL(url).port), "127.0.0.1")
      socket.on("error", () => {})
      socket.write("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
      yield* eventually(server.stats, (stats) => stats.inFlight === 1)
      socket.destroy()
      const after = yield* eventually(server.stats, (stats) => stats.inFlight === 0 && stats.connections === 0)
      expect(after.served).toBe(1)
      expect(Option.isNone(yield* Deferred.poll(ran))).toBe(true)
    }))

  it.scopedLive("a request copied by modify reads the same body, as text and as a stream", () =>
    Effect.gen(function*() {
      const app = Effect.flatMap(HttpServerRequest.HttpServerRequest, (req) =>
        Effect.gen(function*() {
          const copy = req.modify({ url: "/renamed" })
          const text = yield* req.text
          const streamed = yield* Stream.runCollect(Stream.decodeText(copy.stream)).pipe(Effect.map((chunks) => [...chunks].join("")))
          const again = yield* copy.text
          return HttpServerResponse.unsafeJson({ text, streamed, again, url: copy.url })
        }))
      const { url } = yield* serve(app)
      const response = yield* request(`${url}/original`, { method: "POST", body: "the body" })
      expect(JSON.parse(response.body)).toEqual({ text: "the body", streamed: "the body", again: "the body", url: "/renamed" })
    }))

  it.scopedLive("a multipart body is parsed, its parser loaded on first use: fields and a file, part by part", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const parts = yield* Stream.runCollect(request.multipartStream)
        const described = [...parts].map((part) =>
          part._tag === "Field" ? `field ${part.key}=${part.value}` : `file ${part.key} ${part.name} ${part.contentType}`
        )
        return HttpServerResponse.text(described.join("; "))
      }))
      const form = new FormData()
      form.append("name", "ada")
      form.append("upload", new Blob(["report"], { type: "text/plain" }), "report.txt")
      const response = yield* request(url, { method: "POST", body: form })
      expect(response.status).toBe(200)
      expect(response.body).toBe("field name=ada; file upload report.txt text/plain")
    }))

})
