/**
 * Effect's metrics in the Prometheus text exposition format 0.0.4, for a `GET /metrics` route.
 *
 * Effect 3 ships no Prometheus exporter short of the OpenTelemetry SDK, so this renders
 * `Metric.snapshot` directly. Metric tags become labels. A frequency metric becomes a counter
 * family with one series per observed string, that string in the label `key`. Series whose
 * sanitized name already belongs to a family of another type are left out, as are repeats of a
 * label set within a family, so that the output is always a valid exposition.
 */
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import type * as MetricPair from "effect/MetricPair"

/** The `Content-Type` of the text exposition format 0.0.4, as `metricsApp` answers with it. */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

type FamilyType = "counter" | "gauge" | "histogram" | "summary"

type Label = readonly [name: string, value: string]

interface Sample {
  readonly suffix: string
  readonly labels: ReadonlyArray<Label>
  readonly value: number | bigint
}

interface Series {
  readonly tagLabels: string
  readonly samples: ReadonlyArray<Sample>
}

interface Family {
  readonly name: string
  readonly type: FamilyType
  help: Option.Option<string>
  readonly series: Array<Series>
}

/**
 * Replaces the characters `invalid` matches with `_`, and prefixes `_` to a name that is empty or starts
 * with a digit.
 */
const sanitize = (name: string, invalid: RegExp): string => {
  const replaced = name.replace(invalid, "_")
  return replaced === "" || /^[0-9]/.test(replaced) ? `_${replaced}` : replaced
}

const sanitizeMetricName = (name: string): string => sanitize(name, /[^a-zA-Z0-9_:]/g)

const sanitizeLabelName = (name: string): string => sanitize(name, /[^a-zA-Z0-9_]/g)

const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatNumber = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Infinity) return "+Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

const compareStrings = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

/** Tags as sanitized labels sorted by name; a later tag with the same name wins. */
const tagLabels = (tags: ReadonlyArray<{ readonly key: string; readonly value: string }>): ReadonlyArray<Label> => {
  const byName = new Map<string, string>()
  for (const tag of tags) byName.set(sanitizeLabelName(tag.key), tag.value)
  return [...byName].sort(([a], [b]) => compareStrings(a, b))
}

const renderLabels = (labels: ReadonlyArray<Label>): string =>
  labels.length === 0 ? "" : `{${labels.map(([name, value]) => `${name}="${escapeLabelValue(value)}"`).join(",")}}`

/** `tags` with `name` set to `value`, replacing a tag of that name. */
const withLabel = (tags: ReadonlyArray<Label>, name: string, value: string): ReadonlyArray<Label> => [
  ...tags.filter(([tagName]) => tagName !== name),
  [name, value]
]

const seriesOf = (
  state: MetricState.MetricState.Untyped,
  tags: ReadonlyArray<Label>
): { readonly type: FamilyType; readonly samples: ReadonlyArray<Sample> } | undefined => {
  if (MetricState.isCounterState(state)) {
    return { type: "counter", samples: [{ suffix: "", labels: tags, value: state.count }] }
  }
  if (MetricState.isGaugeState(state)) {
    return { type: "gauge", samples: [{ suffix: "", labels: tags, value: state.value }] }
  }
  if (MetricState.isHistogramState(state)) {
    const buckets: Array<Sample> = state.buckets
      .filter(([boundary]) => boundary !== Infinity)
      .map(([boundary, cumulativeCount]) => ({
        suffix: "_bucket",
        labels: withLabel(tags, "le", formatNumber(boundary)),
        value: cumulativeCount
      }))
    return {
      type: "histogram",
      samples: [
        ...buckets,
        { suffix: "_bucket", labels: withLabel(tags, "le", "+Inf"), value: state.count },
        { suffix: "_sum", labels: tags, value: state.sum },
        { suffix: "_count", labels: tags, value: state.count }
      ]
    }
  }
  if (MetricState.isSummaryState(state)) {
    const quantiles: Array<Sample> = state.quantiles.flatMap(([quantile, value]) =>
      Option.isSome(value)
        ? [{ suffix: "", labels: withLabel(tags, "quantile", formatNumber(quantile)), value: value.value }]
        : []
    )
    return {
      type: "summary",
      samples: [
        ...quantiles,
        { suffix: "_sum", labels: tags, value: state.sum },
        { suffix: "_count", labels: tags, value: state.count }
      ]
    }
  }
  return undefined
}

/** A frequency yields one series per observed string, so it is expanded before grouping. */
const seriesListOf = (
  pair: MetricPair.MetricPair.Untyped
): ReadonlyArray<{ readonly type: FamilyType; readonly tagLabels: string; readonly samples: ReadonlyArray<Sample> }> => {
  const tags = tagLabels(pair.metricKey.tags)
  const state = pair.metricState
  if (MetricState.isFrequencyState(state)) {
    return [...state.occurrences].map(([key, occurrences]) => {
      const labels = withLabel(tags, "key", key)
      return {
        type: "counter",
        tagLabels: renderLabels(labels),
        samples: [{ suffix: "", labels, value: occurrences }]
      }
    })
  }
  const series = seriesOf(state, tags)
  return series === undefined ? [] : [{ ...series, tagLabels: renderLabels(tags) }]
}

const renderFamily = (family: Family): string => {
  const lines: Array<string> = []
  if (Option.isSome(family.help)) lines.push(`# HELP ${family.name} ${escapeHelp(family.help.value)}`)
  lines.push(`# TYPE ${family.name} ${family.type}`)
  const series = [...family.series].sort((a, b) => compareStrings(a.tagLabels, b.tagLabels))
  for (const { samples } of series) {
    for (const sample of samples) {
      lines.push(`${family.name}${sample.suffix}${renderLabels(sample.labels)} ${formatNumber(sample.value)}`)
    }
  }
  return lines.map((line) => `${line}\n`).join("")
}

/**
 * Renders metric pairs (e.g. `Metric.snapshot`'s) as a text exposition: one family per sanitized name,
 * families and series sorted, `# HELP` from the metric's description. Pure; `exposition` renders the
 * current snapshot.
 */
export const render = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  for (const pair of pairs) {
    const name = sanitizeMetricName(pair.metricKey.name)
    for (const series of seriesListOf(pair)) {
      let family = families.get(name)
      if (family === undefined) {
        family = { name, type: series.type, help: Option.none(), series: [] }
        families.set(name, family)
      }
      if (family.type !== series.type) continue
      if (family.series.some((existing) => existing.tagLabels === series.tagLabels)) continue
      if (Option.isNone(family.help)) family.help = pair.metricKey.description
      family.series.push({ tagLabels: series.tagLabels, samples: series.samples })
    }
  }
  return [...families.values()]
    .sort((a, b) => compareStrings(a.name, b.name))
    .map(renderFamily)
    .join("")
}

/** Every Effect metric now (`Metric.snapshot` of the global registry), rendered by `render`. */
export const exposition: Effect.Effect<string> = Effect.map(Metric.snapshot, render)

/**
 * An HTTP app answering with `exposition` as `text/plain` (`contentType`): mount it at `GET /metrics` for
 * Prometheus to scrape.
 *
 * @example
 * ```ts
 * import { HttpRouter } from "@effect/platform"
 * import { Prometheus } from "keel/http"
 *
 * const router = HttpRouter.empty.pipe(HttpRouter.get("/metrics", Prometheus.metricsApp))
 * ```
 */
export const metricsApp: Effect.Effect<HttpServerResponse.HttpServerResponse> = Effect.map(
  exposition,
  (body) => HttpServerResponse.text(body, { contentType })
)
