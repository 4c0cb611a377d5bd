/**
 * PropertyRuns: 100 cases by default, KEEL_PROPERTY_RUNS when set, and a clear error for a bad value.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import { PropertyRuns } from "keel/testing"

const original = process.env["KEEL_PROPERTY_RUNS"]

afterEach(() => {
  if (original === undefined) delete process.env["KEEL_PROPERTY_RUNS"]
  else process.env["KEEL_PROPERTY_RUNS"] = original
})

describe("PropertyRuns", () => {
  it("runs 100 cases unless KEEL_PROPERTY_RUNS says otherwise", () => {
    delete process.env["KEEL_PROPERTY_RUNS"]
    expect(PropertyRuns.runs()).toBe(100)
    expect(PropertyRuns.fastCheck(7)).toEqual({ fastCheck: { numRuns: 100, seed: 7 } })
    process.env["KEEL_PROPERTY_RUNS"] = "1000"
    expect(PropertyRuns.fastCheck(7)).toEqual({ fastCheck: { numRuns: 1000, seed: 7 } })
  })

  it("refuses a value that is not a positive integer", () => {
    for (const bad of ["0", "-5", "2.5", "many"]) {
      process.env["KEEL_PROPERTY_RUNS"] = bad
      expect(() => PropertyRuns.runs()).toThrow(`KEEL_PROPERTY_RUNS must be a positive integer, got "${bad}"`)
    }
  })
})
