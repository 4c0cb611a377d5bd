/**
 * The queue's Lua scripts, one file each in scripts/. Each runs atomically in Redis; together they are every
 * change of a job's state, so that no other consumer ever sees a job half moved. Each file opens with a comment
 * saying what it does, with its KEYS and ARGV.
 *
 * The files are read once, when this module loads, and run by their SHA-1 (Connection.evalScript: EVALSHA, the
 * text sent only when Redis does not have it yet). A file's opening `--` comment, up to the first blank line, is
 * for readers and is not sent. What is sent is `\n<prelude>\n<code>` for the scripts that call the prelude's
 * functions and `\n<code>` for the others: the same bytes, so the same SHA-1, as every earlier version of this
 * queue sent, so processes of different versions on one Redis share the scripts Redis has cached.
 */
import { readFileSync } from "node:fs"
import { type Script, script } from "../Connection.js"

/** The code of scripts/`file`.lua, without its opening comment and the blank line after it. */
const codeOf = (file: string) =>
  readFileSync(new URL(`./scripts/${file}.lua`, import.meta.url), "utf8").replace(/^(?:--.*\n)+\n/, "")

const prelude = codeOf("prelude")

const load = (file: string, { withPrelude }: { readonly withPrelude: boolean }): Script =>
  script(withPrelude ? `\n${prelude}\n${codeOf(file)}` : `\n${codeOf(file)}`)

/** Every script of the queue, by the name its calls report in errors (`offer: …`). */
export const scripts = {
  offer: load("offer", { withPrelude: true }),
  take: load("take", { withPrelude: true }),
  ack: load("ack", { withPrelude: false }),
  settle: load("settle", { withPrelude: true }),
  promote: load("promote", { withPrelude: true }),
  requeue: load("requeue", { withPrelude: false }),
  depth: load("depth", { withPrelude: false }),
  deadLetters: load("deadLetters", { withPrelude: false }),
  retire: load("retire", { withPrelude: false })
}

/** The name of one of `scripts`. */
export type ScriptName = keyof typeof scripts
