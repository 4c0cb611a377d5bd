/**
 * The `@example` blocks of Keel's TSDoc, as files: the consumer test type-checks each one against the packed
 * package, so an example in the API reference cannot drift from the API it shows.
 */
import { readdirSync, readFileSync } from "node:fs"
import { join, relative } from "node:path"
import { repositoryRoot } from "./childProcess.js"

export interface DocExample {
  /** A file name that says where the example comes from, e.g. `src-WorkerPool-1.ts`. */
  readonly file: string
  readonly source: string
}

const sourceFiles = (directory: string): Array<string> =>
  readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name)
    return entry.isDirectory() ? sourceFiles(path) : entry.name.endsWith(".ts") ? [path] : []
  })

const docComment = /\/\*\*([\s\S]*?)\*\//g
const example = /@example\s*\n\s*```(?:ts|typescript)\n([\s\S]*?)\n\s*```/g

/** Every example of every doc comment under src/, services/ and layers/, in file order. */
export const documentedExamples = (): Array<DocExample> =>
  ["src", "services", "layers"].flatMap((folder) => sourceFiles(join(repositoryRoot, folder))).sort().flatMap((path) => {
    const name = relative(repositoryRoot, path).replace(/\.ts$/, "").replaceAll("/", "-")
    const comments = [...readFileSync(path, "utf8").matchAll(docComment)].map((match) =>
      match[1]!.split("\n").map((line) => line.replace(/^\s*\* ?/, "")).join("\n")
    )
    const sources = comments.flatMap((comment) => [...comment.matchAll(example)].map((match) => match[1]!))
    return sources.map((source, index) => ({
      file: `${name}-${index + 1}.ts`,
      // A snippet without imports is a script; as a module it cannot clash with the others.
      source: /^\s*(import|export)\s/m.test(source) ? `${source}\n` : `${source}\nexport {}\n`
    }))
  })
