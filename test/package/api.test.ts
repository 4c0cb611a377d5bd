/**
 * What users import changes only on purpose: each entry point's API report (docs/api/*.api.md, API
 * Extractor's view of the packed package's declarations) must equal the one committed. After a deliberate
 * change, `npm run api:update` writes the new reports, and the diff of those files is the change to review.
 */
import { describe, expect, it } from "vitest"
import { compareReports } from "../support/apiReport.js"

describe("public API report", () => {
  it("every entry point's declarations match its committed report (npm run api:update after a deliberate change)", async () => {
    const reports = await compareReports()
    expect(reports.map(({ entryPoint }) => entryPoint.specifier)).toEqual([
      "keel",
      "keel/node",
      "keel/http",
      "keel/memory",
      "keel/redis",
      "keel/otel",
      "keel/services",
      "keel/testing"
    ])
    for (const { entryPoint, built, committed } of reports) {
      expect(built, `docs/api/${entryPoint.reportFile} differs from the build: run npm run api:update and review the diff`)
        .toBe(committed)
    }
  }, 300_000)
})
