import type { LatencyHistogram } from '../../proxy/index.js'

/** Prometheus text for fixed-bucket histograms kept by a component (one series per label value). */
export function histogramText(name: string, help: string, label: string, series: Array<[string, LatencyHistogram]>): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`]
  for (const [value, h] of series) {
    for (const [le, count] of h.cumulative()) lines.push(`${name}_bucket{${label}="${value}",le="${le}"} ${count}`)
    lines.push(`${name}_sum{${label}="${value}"} ${h.sum}`)
    lines.push(`${name}_count{${label}="${value}"} ${h.count}`)
  }
  return `${lines.join('\n')}\n`
}
