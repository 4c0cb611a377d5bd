/**
 * The Redis names of one queue, all under the prefix `keel:jobs:<name>:`, so that queues of the same name share
 * their jobs and queues of other names never meet. What each structure holds, and how a job moves between them,
 * is told in index.ts; the scripts compute job hash names from `job`, which is why a queue needs one Redis, not
 * a Cluster.
 */

/** The keys of one queue's structures. */
export interface Keys {
  /** The stream: one entry `{ id }` per job that is ready or leased. */
  readonly stream: string
  /** The sorted set of delayed job ids, scored by the Redis time (ms) at which they become ready. */
  readonly delayed: string
  /** The list of dead job ids, oldest first. */
  readonly dead: string
  /** The prefix of the job hashes: a job's hash is `job` + its id. */
  readonly job: string
}

/** The keys of the queue named `name`, and the name of its consumer group on the stream. */
export const keysOf = (name: string): { readonly keys: Keys; readonly group: string } => {
  const prefix = `keel:jobs:${name}:`
  return {
    keys: { stream: `${prefix}stream`, delayed: `${prefix}delayed`, dead: `${prefix}dead`, job: `${prefix}job:` },
    group: `${prefix}group`
  }
}
