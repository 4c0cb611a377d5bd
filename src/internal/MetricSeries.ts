/**
 * The series of one instance of a Keel component in Keel's shared metrics.
 *
 * Keel defines one instrument per measurement (`keel_middleware_rejections_total`, `keel_pool_in_flight`),
 * shared by every instance, whose series are told apart by a label naming the instance (`middleware=<name>`,
 * `pool=<name>`, `breaker=<name>`) and, for some, labels of their own (`reason`, `from` and `to`). Components
 * update their series on hot paths with `unsafeUpdate(value, labels)`, and Effect's registry caches a series
 * by the identity of that labels array, so each array must be made once per series and kept: this module
 * makes and keeps them, and gives the same series as a tagged metric for users to read or export.
 */
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"

/** The series of one instance: the label arrays its component updates with, and its metrics tagged. */
export interface Series {
  /** The instance's own labels (`<key>=<name>`): one array for its lifetime. */
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  /** The instance's labels with `extra` added: one array per distinct `extra`, made on first use. */
  readonly labelsWith: (extra: Readonly<Record<string, string>>) => ReadonlyArray<MetricLabel.MetricLabel>
  /** `instrument` tagged as this instance's series (with `extra` labels): to read it or export it. */
  readonly of: <Type, In, Out>(
    instrument: Metric.Metric<Type, In, Out>,
    extra?: Readonly<Record<string, string>>
  ) => Metric.Metric<Type, In, Out>
}

/** The series of the instance labelled `key=name`. */
export const series = (key: string, name: string): Series => {
  const labels = [MetricLabel.make(key, name)]
  const extended = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()
  const labelsWith = (extra: Readonly<Record<string, string>>) => {
    const entries = Object.entries(extra)
    const cacheKey = entries.map(([label, value]) => `${label}=${value}`).join("\u0000")
    let found = extended.get(cacheKey)
    if (found === undefined) {
      found = [...labels, ...entries.map(([label, value]) => MetricLabel.make(label, value))]
      extended.set(cacheKey, found)
    }
    return found
  }
  return {
    labels,
    labelsWith,
    of: (instrument, extra) => Metric.taggedWithLabels(instrument, extra === undefined ? labels : labelsWith(extra))
  }
}
