/** Upper bounds in seconds, as Prometheus buckets: sub-millisecond proxying up to slow Machines. */
export const LATENCY_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * A fixed-bucket histogram the hot path can feed without allocating: one array index per observation.
 * The metrics endpoint renders it (cumulative, Prometheus style) at scrape time.
 */
export class LatencyHistogram {
  readonly counts = new Float64Array(LATENCY_BUCKETS_S.length + 1)
  sum = 0
  count = 0

  observe(seconds: number): void {
    let i = 0
    while (i < LATENCY_BUCKETS_S.length && seconds > LATENCY_BUCKETS_S[i]) i++
    this.counts[i]++
    this.sum += seconds
    this.count++
  }

  /** Cumulative counts per `le` bound, +Inf last. */
  cumulative(): Array<[le: string, count: number]> {
    const out: Array<[string, number]> = []
    let running = 0
    for (let i = 0; i < LATENCY_BUCKETS_S.length; i++) {
      running += this.counts[i]
      out.push([String(LATENCY_BUCKETS_S[i]), running])
    }
    out.push(['+Inf', running + this.counts[LATENCY_BUCKETS_S.length]])
    return out
  }
}
