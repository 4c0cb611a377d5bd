/**
 * The README's TypeScript snippets, each named by the marker on the line before it
 * (`<!-- snippet: quick-start -->`), so a test can say what each one must print without depending on their
 * order. Every ```ts block must have a marker.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { repositoryRoot } from "./childProcess.js"

export interface ReadmeSnippet {
  readonly name: string
  readonly source: string
}

export const readmeSnippets = (): Array<ReadmeSnippet> => {
  const readme = readFileSync(join(repositoryRoot, "README.md"), "utf8")
  const blocks = [...readme.matchAll(/^```ts\n/gm)].length
  const snippets = [...readme.matchAll(/^<!-- snippet: ([\w-]+) -->\n```ts\n([\s\S]*?)^```/gm)].map((match) => ({
    name: match[1]!,
    source: match[2]!
  }))
  if (snippets.length !== blocks) {
    throw new Error(`README.md has ${blocks} TypeScript blocks but ${snippets.length} snippet markers`)
  }
  return snippets
}
