import type { Logger } from 'pino'
import { LatencyHistogram } from './latency-histogram.js'

/** Where a request's time went (DESIGN §4 phases), measured on this node. */
export const PHASES = ['route', 'upstream', 'response', 'total'] as const
export type Phase = (typeof PHASES)[number]

/** How the client spoke: http / https (HTTP/1.x), h2, or the stream handlers by their front. */
export type Handler = 'http' | 'https' | 'h2' | 'tcp' | 'tls' | 'pg_tls'

export interface RequestMetricsInit {
  /** Share of requests written to the request log (0…1). Responses ≥ 500 are always logged. */
  sampleRate: number
}

/**
 * Per-request accounting, fed once per request by the handlers' finish phase: counts by app, handler and
 * status, a latency histogram per phase, and one sampled structured log line. Everything is plain numbers
 * and nested Maps keyed by strings the request already holds: nothing is allocated per request unless the
 * line is logged.
 */
export class RequestMetrics {
  /** app → handler → status → count. */
  readonly counts = new Map<string, Map<string, Map<number, number>>>()
  readonly phases: Record<Phase, LatencyHistogram> = {
    route: new LatencyHistogram(), upstream: new LatencyHistogram(), response: new LatencyHistogram(), total: new LatencyHistogram(),
  }
  logged = 0

  constructor(private readonly log: Logger, private readonly init: RequestMetricsInit) {}

  /**
   * `t*` are performance.now() readings: start (request head read / stream accepted), routed (a Machine was
   * picked, queue and autostart included), head (the Machine's response head arrived; 0 when none), end.
   */
  finished(
    app: string, handler: Handler, status: number, machine: string | undefined, region: string | undefined, reqId: string,
    t0: number, tRouted: number, tHead: number, tEnd: number, bytesOut: number,
  ): void {
    let byHandler = this.counts.get(app)
    if (byHandler === undefined) this.counts.set(app, (byHandler = new Map()))
    let byStatus = byHandler.get(handler)
    if (byStatus === undefined) byHandler.set(handler, (byStatus = new Map()))
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1)

    const total = (tEnd - t0) / 1000
    this.phases.total.observe(total)
    if (tRouted > 0) {
      this.phases.route.observe((tRouted - t0) / 1000)
      if (tHead > 0) {
        this.phases.upstream.observe((tHead - tRouted) / 1000)
        this.phases.response.observe((tEnd - tHead) / 1000)
      }
    }
    if (status >= 500 || (this.init.sampleRate > 0 && Math.random() < this.init.sampleRate)) {
      this.logged++
      this.log.info({
        reqId, app, machine, region, handler, status, bytes: bytesOut,
        ms: { route: tRouted > 0 ? round(tRouted - t0) : undefined, upstream: tHead > 0 && tRouted > 0 ? round(tHead - tRouted) : undefined, response: tHead > 0 ? round(tEnd - tHead) : undefined, total: round(tEnd - t0) },
      }, 'request')
    }
  }
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000
