/**
 * Keel on Node: `import { runMain, DrainingHttpServer } from "keel/node"`. Signals, process exit codes and
 * servers with draining live here, so that `keel` itself stays platform-agnostic.
 */
export { runMain, runToExitCode, type RunMainOptions } from "./runMain.js"
export * as Signals from "./Signals.js"
export * as DrainingHttpServer from "./DrainingHttpServer.js"
export * as TcpServer from "./TcpServer.js"
