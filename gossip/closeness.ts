import type { Logger } from 'pino'
import { peerIdFromString } from '@libp2p/peer-id'
import type { GossipLibp2p } from './libp2p-node.js'

/**
 * How far other nodes are (DESIGN §3): RTT per peer from libp2p ping, smoothed (EWMA, as TCP's SRTT), named by
 * node through the membership's peer ids. The proxy reads it through `ClosenessView` and never waits on it.
 */
export interface ClosenessView {
  /** Smoothed RTT in ms: 0 for this node, undefined when never measured. */
  rttToNode(node: string): number | undefined
  /** Regions from closest to farthest (this node's region first); unmeasured regions last, by name. */
  regionsByRtt(): string[]
}

export interface ClosenessNode { name: string; region: string | undefined; peerId: string | undefined; up: boolean }

export interface ClosenessDeps {
  libp2p: GossipLibp2p | undefined
  nodeName: string
  region: string
  /** O(1): the routing path asks per request. */
  peerIdOf(node: string): string | undefined
  /** Every known node, from membership; read only to rebuild the region order. */
  nodes(): ClosenessNode[]
  log: Logger
}

/** How long a computed region order is reused (membership changes are picked up within this). */
const REGION_CACHE_MS = 1_000

export interface ClosenessOptions {
  pingIntervalMs: number
  pingTimeoutMs: number
  /** Weight of a new sample (TCP uses 1/8; a little more reacts faster to a route change). */
  alpha: number
}

export class Closeness implements ClosenessView {
  private readonly srtt = new Map<string, number>() // peer id → ms
  private readonly pinging = new Set<string>()
  private timer: NodeJS.Timeout | undefined
  private readonly stopping = new AbortController()
  private regions: { at: number; order: string[]; best: Map<string, number> } | undefined

  constructor(private readonly d: ClosenessDeps, private readonly o: ClosenessOptions) {}

  start(): void {
    const libp2p = this.d.libp2p
    if (libp2p === undefined) return
    libp2p.addEventListener('peer:connect', this.onConnect)
    this.timer = setInterval(() => { for (const p of libp2p.getPeers()) this.measure(p.toString()) }, this.o.pingIntervalMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.stopping.abort()
    this.d.libp2p?.removeEventListener('peer:connect', this.onConnect)
  }

  rttToNode(node: string): number | undefined {
    if (node === this.d.nodeName) return 0
    const peerId = this.d.peerIdOf(node)
    return peerId === undefined ? undefined : this.srtt.get(peerId)
  }

  rttToPeer(peerId: string): number | undefined {
    return this.srtt.get(peerId)
  }

  /** Closest up node per region, in ms. */
  rttByRegion(): Map<string, number> {
    return this.regionView().best
  }

  regionsByRtt(): string[] {
    return this.regionView().order
  }

  /** Rebuilt at most once a second or after a new sample, so callers on the request path do not allocate. */
  private regionView(): { order: string[]; best: Map<string, number> } {
    const now = performance.now()
    if (this.regions !== undefined && now - this.regions.at < REGION_CACHE_MS) return this.regions
    const best = new Map<string, number>([[this.d.region, 0]])
    const unmeasured = new Set<string>()
    for (const n of this.d.nodes()) {
      if (n.region === undefined) continue
      const rtt = n.up && n.peerId !== undefined ? this.srtt.get(n.peerId) : undefined
      if (rtt === undefined) { unmeasured.add(n.region); continue }
      const prev = best.get(n.region)
      if (prev === undefined || rtt < prev) best.set(n.region, rtt)
    }
    const order = [...best].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0])).map(([r]) => r)
    for (const r of [...unmeasured].sort()) if (!best.has(r)) order.push(r)
    this.regions = { at: now, order, best }
    return this.regions
  }

  private readonly onConnect = (evt: CustomEvent<{ toString(): string }>): void => {
    this.measure(evt.detail.toString())
  }

  private measure(peer: string): void {
    const libp2p = this.d.libp2p
    if (libp2p === undefined || this.pinging.has(peer) || this.stopping.signal.aborted) return
    this.pinging.add(peer)
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.o.pingTimeoutMs)])
    libp2p.services.ping.ping(peerIdFromString(peer), { signal })
      .then((rtt) => {
        const prev = this.srtt.get(peer)
        this.srtt.set(peer, prev === undefined ? rtt : prev + this.o.alpha * (rtt - prev))
        this.regions = undefined
      })
      .catch((err: unknown) => { if (!this.stopping.signal.aborted) this.d.log.debug({ err, peer }, 'ping failed') })
      .finally(() => this.pinging.delete(peer))
  }
}
