import { defineConfig } from "vitest/config"

// In the repository "keel" resolves to the TypeScript sources (the "@keel/source" export condition)
// rather than to the built dist/; the rest are Vite's default server conditions but "module". Vitest also
// hands these conditions to Node in its workers, and under "module" Node would load the bundler-only
// builds some packages export (@opentelemetry/api's has extensionless imports, which Node cannot load);
// without it, packages resolve as they do for a user's `node`.
const conditions = ["@keel/source", "node", "development|production"]

export default defineConfig({
  ssr: { resolve: { conditions } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
