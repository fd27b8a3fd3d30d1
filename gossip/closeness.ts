import type { Logger } from 'pino'
import { peerIdFromString } from '@libp2p/peer-id'
import { connectedPeerIds, type GossipLibp2p } from './libp2p-node.js'
import { PING_PROTOCOL, PingLine } from './ping-line.js'
import { RttWindow } from './rtt-window.js'

/**
 * How far other nodes are (DESIGN §3): RTT per peer from libp2p ping, smoothed as the least of its last few
 * pings (gossip/rtt-window.ts: the path's RTT, not a busy moment's), named by node through the membership's peer
 * ids. The proxy reads it through `ClosenessView` and never waits on it.
 *
 * Pings run on one long-lived stream per peer (gossip/ping-line.ts), and they double as the connection's
 * liveness check: a connection whose pings have all failed for `deadAfterMs` is aborted, so the dialer makes
 * a new one. That is the job libp2p's connection monitor did with a new ping stream per connection every
 * 10 s; it is off (gossip/libp2p-node.ts) so that one ping per peer and period serves both.
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
/**
 * A new connection's peer is pinged this often for its first WARM_UP_PERIOD_MS (and until its RTT window is full),
 * so that routing soon stops leaning on pings taken while either node was busy: the handshake, identify and the
 * first sync run then, and a node that has just started also warms Automerge up. Had the window filled in that
 * busy time and then gone over to the ping interval, a busy moment's RTT would rank a peer for window ×
 * pingIntervalMs (30 s by default); this way it has left the window a few seconds after the busy time ends.
 */
const WARM_UP_INTERVAL_MS = 1_000
const WARM_UP_PERIOD_MS = 30_000

export interface ClosenessOptions {
  pingIntervalMs: number
  pingTimeoutMs: number
  /** A connection whose pings all failed for this long is aborted (a black-holed or half-open connection). */
  deadAfterMs: number
  /** How many of a peer's latest pings its RTT is the least of (× pingIntervalMs: how long a longer route takes to show). */
  rttWindow: number
}

export class Closeness implements ClosenessView {
  private readonly rtts = new Map<string, RttWindow>() // peer id → its last pings
  private readonly pinging = new Set<string>()
  private readonly lines = new Map<string, PingLine>()
  /** performance.now() of the first failed ping in a peer's current run of failures. */
  private readonly failingSince = new Map<string, number>()
  /** performance.now() when a peer's current connection came up, while it is in its warm-up period. */
  private readonly connectedAt = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private warmUpTimer: NodeJS.Timeout | undefined
  private readonly stopping = new AbortController()
  private regions: { at: number; order: string[]; best: Map<string, number> } | undefined

  constructor(private readonly d: ClosenessDeps, private readonly o: ClosenessOptions) {}

  start(): void {
    const libp2p = this.d.libp2p
    if (libp2p === undefined) return
    libp2p.addEventListener('peer:connect', this.onConnect)
    libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.timer = setInterval(() => { for (const peer of connectedPeerIds(libp2p)) this.measure(peer) }, this.o.pingIntervalMs)
    this.timer.unref()
    if (this.o.pingIntervalMs > WARM_UP_INTERVAL_MS) {
      this.warmUpTimer = setInterval(() => {
        const now = performance.now()
        for (const peer of connectedPeerIds(libp2p)) {
          if (this.warmingUp(peer, now)) this.measure(peer)
        }
      }, WARM_UP_INTERVAL_MS)
      this.warmUpTimer.unref()
    }
  }

  stop(): void {
    clearInterval(this.timer)
    clearInterval(this.warmUpTimer)
    this.timer = undefined
    this.warmUpTimer = undefined
    this.stopping.abort()
    this.d.libp2p?.removeEventListener('peer:connect', this.onConnect)
    this.d.libp2p?.removeEventListener('peer:disconnect', this.onDisconnect)
    for (const line of this.lines.values()) line.close()
    this.lines.clear()
    this.failingSince.clear()
    this.connectedAt.clear()
  }

  rttToNode(node: string): number | undefined {
    if (node === this.d.nodeName) return 0
    const peerId = this.d.peerIdOf(node)
    return peerId === undefined ? undefined : this.rtts.get(peerId)?.value
  }

  rttToPeer(peerId: string): number | undefined {
    return this.rtts.get(peerId)?.value
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
      const rtt = n.up && n.peerId !== undefined ? this.rtts.get(n.peerId)?.value : undefined
      if (rtt === undefined) { unmeasured.add(n.region); continue }
      const prev = best.get(n.region)
      if (prev === undefined || rtt < prev) best.set(n.region, rtt)
    }
    const order = [...best].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0])).map(([r]) => r)
    for (const r of [...unmeasured].sort()) if (!best.has(r)) order.push(r)
    this.regions = { at: now, order, best }
    return this.regions
  }

  private warmingUp(peer: string, now: number): boolean {
    const since = this.connectedAt.get(peer)
    if (since !== undefined) {
      if (now - since < WARM_UP_PERIOD_MS) return true
      this.connectedAt.delete(peer)
    }
    return this.rtts.get(peer)?.full !== true
  }

  private readonly onConnect = (evt: CustomEvent<{ toString(): string }>): void => {
    const peer = evt.detail.toString()
    this.connectedAt.set(peer, performance.now())
    this.measure(peer)
  }

  private readonly onDisconnect = (evt: CustomEvent<{ toString(): string }>): void => {
    const peer = evt.detail.toString()
    this.lines.get(peer)?.close()
    this.lines.delete(peer)
    this.failingSince.delete(peer)
    this.connectedAt.delete(peer)
  }

  private measure(peer: string): void {
    if (this.d.libp2p === undefined || this.pinging.has(peer) || this.stopping.signal.aborted) return
    this.pinging.add(peer)
    this.pingOnce(peer)
      .then((rtt) => {
        const window = this.rtts.get(peer)
        if (window === undefined) this.rtts.set(peer, new RttWindow(this.o.rttWindow, rtt))
        else window.add(rtt)
        this.regions = undefined
        this.failingSince.delete(peer)
      })
      .catch((err: unknown) => { if (!this.stopping.signal.aborted) this.failed(peer, err) })
      .finally(() => this.pinging.delete(peer))
  }

  private async pingOnce(peer: string): Promise<number> {
    let line = this.lines.get(peer)
    if (line === undefined || !line.isOpen) {
      const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.o.pingTimeoutMs)])
      const stream = await this.d.libp2p!.dialProtocol(peerIdFromString(peer), PING_PROTOCOL, { signal })
      line = new PingLine(stream)
      if (this.stopping.signal.aborted) { line.close(); throw new Error('closeness stopping') }
      this.lines.set(peer, line)
    }
    return await line.ping(this.o.pingTimeoutMs)
  }

  private failed(peer: string, err: unknown): void {
    this.lines.get(peer)?.close() // a late or stray reply must not be taken for the next ping's
    this.lines.delete(peer)
    const now = performance.now()
    const since = this.failingSince.get(peer) ?? now
    this.failingSince.set(peer, since)
    this.d.log.debug({ err, peer }, 'ping failed')
    if (now - since < this.o.deadAfterMs) return
    const conns = this.d.libp2p?.getConnections(peerIdFromString(peer)) ?? []
    if (conns.length === 0) return
    this.d.log.info({ peer, failingMs: Math.round(now - since) }, 'no ping reply for too long: closing the connection so that it is redialled')
    this.failingSince.delete(peer)
    for (const c of conns) c.abort(new Error('no ping reply'))
  }
}
