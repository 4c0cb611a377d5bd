/**
 * RequestContext — the services a request's fiber runs with: the server's, plus the request itself.
 *
 * Every request needs a Context holding its `HttpServerRequest` beside the services the server was started
 * with. Adding the request to the server's Context would copy the server's whole Map for each request, a copy
 * as large as the application's services; `ServicesWithRequest` reads through to the server's Map instead,
 * so a request's Context costs the same whatever the number of services.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"

/**
 * A request's services: the server's, plus the request itself. Effect never writes to a Context's map
 * once made (adding a service copies it), so instead of copying the server's services into a new Map for
 * every request, this one reads through to them; it is a Map to every reader, and refuses writes.
 */
export class ServicesWithRequest extends Map<string, unknown> {
  readonly #services: ReadonlyMap<string, unknown>
  readonly #request: HttpServerRequest.HttpServerRequest
  constructor(services: ReadonlyMap<string, unknown>, request: HttpServerRequest.HttpServerRequest) {
    super()
    this.#services = services
    this.#request = request
  }
  override get(key: string): unknown {
    return key === requestKey ? this.#request : this.#services.get(key)
  }
  override has(key: string): boolean {
    return key === requestKey || this.#services.has(key)
  }
  override get size(): number {
    return this.#services.has(requestKey) ? this.#services.size : this.#services.size + 1
  }
  override *entries(): MapIterator<[string, unknown]> {
    for (const entry of this.#services) if (entry[0] !== requestKey) yield entry
    yield [requestKey, this.#request]
  }
  override [Symbol.iterator](): MapIterator<[string, unknown]> {
    return this.entries()
  }
  override *keys(): MapIterator<string> {
    for (const [key] of this.entries()) yield key
  }
  override *values(): MapIterator<unknown> {
    for (const [, value] of this.entries()) yield value
  }
  override forEach(callback: (value: unknown, key: string, map: Map<string, unknown>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this)
  }
  override set(): this {
    throw new TypeError("a request's services are read-only")
  }
  override delete(): boolean {
    throw new TypeError("a request's services are read-only")
  }
  override clear(): void {
    throw new TypeError("a request's services are read-only")
  }
}
const requestKey = HttpServerRequest.HttpServerRequest.key
