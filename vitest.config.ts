import { defineConfig } from "vitest/config"

// In the repository "keel" resolves to the TypeScript sources (the "@keel/source" export condition)
// rather than to the built dist/; the rest are Vite's default server conditions.
const conditions = ["@keel/source", "module", "node", "development|production"]

export default defineConfig({
  ssr: { resolve: { conditions } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
