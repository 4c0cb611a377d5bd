/**
 * The public API report: for each entry point, API Extractor's `.api.md` of the `.d.ts` surface that the
 * packed package gives users, kept in docs/api/. `test/package/api.test.ts` fails when the build differs
 * from the committed report, so a change to what users import shows up in review as a diff of these files;
 * `npm run api:update` writes them anew after a deliberate change.
 *
 * API Extractor reads the packed tarball, unpacked inside packedKeel's project with its types (beside its
 * node_modules, not in it: API Extractor takes whatever lies in node_modules for an external package), so the
 * report is of exactly what ships: the built declarations under their package exports, with peers resolved.
 */
import { CompilerState, Extractor, ExtractorConfig, ExtractorLogLevel } from "@microsoft/api-extractor"
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { repositoryRoot } from "./childProcess.js"
import { packedKeel } from "./packedKeel.js"

/** The committed reports. */
export const reportFolder = join(repositoryRoot, "docs", "api")

export interface EntryPoint {
  /** As users import it, e.g. `keel/node`. */
  readonly specifier: string
  /** The report's file name, e.g. `keel-node.api.md`. */
  readonly reportFile: string
  /** The declaration file the package's `exports` give for it, relative to the package. */
  readonly types: string
}

/** Every entry point of package.json's `exports`. */
export const entryPoints = (): ReadonlyArray<EntryPoint> => {
  const manifest = JSON.parse(readFileSync(join(repositoryRoot, "package.json"), "utf8"))
  return Object.entries<Record<string, string>>(manifest.exports).map(([subpath, conditions]) => {
    const specifier = subpath === "." ? manifest.name : `${manifest.name}/${subpath.slice(2)}`
    return { specifier, reportFile: `${specifier.replaceAll("/", "-")}.api.md`, types: conditions["types"]! }
  })
}

const silent = { logLevel: ExtractorLogLevel.None } as const

/** API Extractor's configuration for the report of one entry point. */
const configFor = (packageFolder: string, entryPoint: EntryPoint, scratch: string): ExtractorConfig =>
  ExtractorConfig.prepare({
    configObject: {
      projectFolder: packageFolder,
      newlineKind: "lf",
      mainEntryPointFilePath: join(packageFolder, entryPoint.types),
      compiler: {
        overrideTsconfig: {
          compilerOptions: {
            module: "NodeNext",
            moduleResolution: "NodeNext",
            target: "ES2022",
            lib: ["ES2022"],
            types: ["node"],
            strict: true
          },
          include: ["dist"]
        }
      },
      apiReport: {
        enabled: true,
        reportFolder: scratch,
        reportTempFolder: join(scratch, "temp"),
        reportFileName: entryPoint.reportFile
      },
      docModel: { enabled: false },
      dtsRollup: { enabled: false },
      tsdocMetadata: { enabled: false },
      messages: {
        compilerMessageReporting: { default: silent },
        tsdocMessageReporting: { default: silent },
        extractorMessageReporting: {
          default: { logLevel: ExtractorLogLevel.None, addToApiReportFile: true },
          // Documentation is TypeDoc's check (`npm run docs`); release tags are not used.
          "ae-undocumented": { logLevel: ExtractorLogLevel.None, addToApiReportFile: false },
          "ae-missing-release-tag": { logLevel: ExtractorLogLevel.None, addToApiReportFile: false }
        }
      }
    },
    configObjectFullPath: undefined,
    packageJsonFullPath: join(packageFolder, "package.json")
  })

/** The report of one entry point as the current build has it, from the program every report shares. */
const reportOf = (config: ExtractorConfig, compilerState: CompilerState, entryPoint: EntryPoint, scratch: string) => {
  const result = Extractor.invoke(config, {
    localBuild: true,
    compilerState,
    messageCallback: (message) => void (message.handled = true)
  })
  if (!result.succeeded) throw new Error(`API Extractor failed on ${entryPoint.specifier}`)
  return withoutErrorBases(readFileSync(join(scratch, entryPoint.reportFile), "utf8"))
}

/**
 * `class QueueFull extends Data.TaggedError("QueueFull")<…>` declares a `QueueFull_base` constructor that no
 * user names; the report's warning that it is not exported says nothing about the API, so it is left out.
 */
const withoutErrorBases = (report: string): string =>
  report.replace(/^ *\/\/ Warning: \(ae-forgotten-export\) The symbol "\w+_base" .*\n *\/\/\n/gm, "")

/** Each entry point's report from the packed package, beside the committed one (empty when missing). */
export const compareReports = async (): Promise<
  ReadonlyArray<{ readonly entryPoint: EntryPoint; readonly built: string; readonly committed: string }>
> => {
  const { tarball, typesProject } = await packedKeel()
  const unpacked = mkdtempSync(join(typesProject, "api-"))
  const scratch = mkdtempSync(join(tmpdir(), "keel-api-"))
  execFileSync("tar", ["-xzf", tarball.path, "-C", unpacked])
  const packageFolder = join(unpacked, "package")
  try {
    const configs = entryPoints().map((entryPoint) => ({ entryPoint, config: configFor(packageFolder, entryPoint, scratch) }))
    // One TypeScript program for all of them: building it is most of the time a report takes.
    const compilerState = CompilerState.create(configs[0]!.config, {
      additionalEntryPoints: configs.map(({ config }) => config.mainEntryPointFilePath)
    })
    return configs.map(({ entryPoint, config }) => ({
      entryPoint,
      built: reportOf(config, compilerState, entryPoint, scratch),
      committed: existsSync(join(reportFolder, entryPoint.reportFile))
        ? readFileSync(join(reportFolder, entryPoint.reportFile), "utf8")
        : ""
    }))
  } finally {
    rmSync(scratch, { recursive: true, force: true })
    rmSync(unpacked, { recursive: true, force: true })
  }
}

// `tsx test/support/apiReport.ts --update` (npm run api:update): write the reports of the current build.
if (process.argv[1]?.endsWith("apiReport.ts") && process.argv.includes("--update")) {
  mkdirSync(reportFolder, { recursive: true })
  for (const { entryPoint, built, committed } of await compareReports()) {
    writeFileSync(join(reportFolder, entryPoint.reportFile), built)
    console.log(`${entryPoint.reportFile}: ${built === committed ? "unchanged" : "written"}`)
  }
}
