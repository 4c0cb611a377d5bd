/**
 * Keel on Node: `import { runMain } from "keel/node"`. Signals, process exit codes and (later) servers
 * with draining live here, so that `keel` itself stays platform-agnostic.
 */
export { runMain, runToExitCode, type RunMainOptions } from "./runMain.js"
export * as Signals from "./Signals.js"
