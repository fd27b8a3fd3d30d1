import type { Logger } from 'pino'
import type { BackhaulOpen } from '../../schemas/backhaul.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { EdgeConnection, type OpenDone } from './edge-connection.js'
import type { BackhaulTls } from './tls-options.js'

export interface BackhaulClientInit {
  tls: BackhaulTls
  /** TCP connect + TLS handshake to a worker (default 3 s). */
  connectTimeoutMs?: number
  /** From OPEN to the worker's answer, which includes its own connect to the Machine (default 10 s). */
  openTimeoutMs?: number
  /** Liveness of quiet connections (defaults 5 s / 5 s): a dead worker fails its streams within the sum. */
  pingIntervalMs?: number
  pingTimeoutMs?: number
  /** A connection without streams is closed after this (default 5 min). */
  idleCloseMs?: number
  /** After a failed dial, opens to that node fail at once for this long, doubling up to 5 s (default 200 ms). */
  retryDelayMs?: number
  /** A node's current backhaul address (node records), for background redials of unreachable nodes. */
  addressOf?: (node: string) => string | undefined
}

export interface BackhaulClientStats {
  connections: number
  streams: number
  dials: number
  dialFailures: number
  opens: number
  openFailures: number
  /** Opens failed at once because the node's last dial failed moments ago. */
  fastFailures: number
}

interface DialFailure { until: number; delayMs: number; err: EdgeProxyError; addr: string; probe: NodeJS.Timeout | undefined }

/** Called when a node becomes unreachable (a dial failed) and when it answers again. */
export type ReachabilityListener = (node: string, reachable: boolean) => void

const MAX_RETRY_DELAY_MS = 5000

/**
 * The edge's side of the backhaul: one multiplexed connection per worker node, dialled on first use and
 * kept while in use (pinged when quiet). A node whose dial just failed is not dialled again for a short,
 * growing while — opens fail at once with EP_BACKHAUL_UNREACHABLE, so the proxy retries another Machine
 * instead of waiting out a connect timeout per request.
 */
export class BackhaulClient {
  private readonly conns = new Map<string, EdgeConnection>()
  private readonly sessions = new Map<string, Buffer>()
  private readonly failures = new Map<string, DialFailure>()
  private readonly counters = { dials: 0, dialFailures: 0, opens: 0, openFailures: 0, fastFailures: 0 }
  private closed = false
  private reachability: ReachabilityListener | undefined

  constructor(private readonly init: BackhaulClientInit, private readonly log: Logger) {}

  /**
   * Tells routing which nodes the backhaul cannot dial (proxy.setNodeReachable): their Machines leave
   * routing at once, so retries go to another node. While a node is unreachable it is redialled in the
   * background (the growing delay below), and reported reachable as soon as a dial succeeds.
   */
  onReachability(listener: ReachabilityListener): void {
    this.reachability = listener
  }

  /** A stream to a Machine on `node`, whose backhaul listens at `addr` (host:port); `done` runs once. */
  open(node: string, addr: string, req: BackhaulOpen, done: OpenDone): void {
    this.counters.opens++
    const conn = this.connection(node, addr)
    if (conn instanceof EdgeProxyError) {
      this.counters.openFailures++
      done(conn, undefined)
      return
    }
    conn.open(req, this.init.openTimeoutMs ?? 10_000, (err, stream) => {
      if (err !== undefined) this.counters.openFailures++
      done(err, stream)
    })
  }

  stats(): BackhaulClientStats {
    let streams = 0
    for (const c of this.conns.values()) streams += c.load
    return { connections: this.conns.size, streams, ...this.counters }
  }

  /** RTT of the live connection to `node`, measured by its pings (ms), if any. */
  rttTo(node: string): number | undefined {
    return this.conns.get(node)?.rtt.lastMs
  }

  /** Closes every connection; streams still open fail. */
  close(): void {
    this.closed = true
    for (const f of this.failures.values()) clearTimeout(f.probe)
    this.failures.clear()
    for (const c of [...this.conns.values()]) c.destroy('is no longer used: this node is shutting down')
    this.conns.clear()
  }

  private connection(node: string, addr: string): EdgeConnection | EdgeProxyError {
    if (this.closed) return new EdgeProxyError('EP_SHUTTING_DOWN', 'this node is shutting down; retry the request')
    const existing = this.conns.get(node)
    if (existing !== undefined && existing.acceptsStreams && existing.address === addr) return existing
    // the node moved, or the connection used up its stream ids: it drains, new streams go to a new one
    if (existing !== undefined && existing.usable) existing.drain()
    const failed = this.failures.get(node)
    if (failed !== undefined && failed.until > performance.now()) {
      this.counters.fastFailures++
      return failed.err
    }
    return this.dial(node, addr)
  }

  private dial(node: string, addr: string): EdgeConnection | EdgeProxyError {
    const target = splitHostPort(addr)
    if (target === undefined) return new EdgeProxyError('EP_BACKHAUL_UNREACHABLE', `node ${node} publishes an invalid backhaul address "${addr}"`)
    this.counters.dials++
    const conn = new EdgeConnection({
      node,
      host: target.host,
      port: target.port,
      tls: this.init.tls,
      connectTimeoutMs: this.init.connectTimeoutMs ?? 3000,
      pingIntervalMs: this.init.pingIntervalMs ?? 5000,
      pingTimeoutMs: this.init.pingTimeoutMs ?? 5000,
      idleCloseMs: this.init.idleCloseMs ?? 300_000,
      session: this.sessions.get(node),
      log: this.log,
    }, {
      connected: (c) => {
        const failed = this.failures.get(node)
        this.log.debug({ node, addr: c.address }, 'backhaul connected')
        if (failed === undefined) return
        clearTimeout(failed.probe)
        this.failures.delete(node)
        this.log.info({ node, addr: c.address }, 'backhaul reachable again')
        this.reachability?.(node, true)
      },
      closed: (c, err) => this.onClosed(c, err),
      session: (_c, session) => { this.sessions.set(node, session) },
    })
    this.conns.set(node, conn)
    return conn
  }

  private onClosed(conn: EdgeConnection, err: EdgeProxyError | undefined): void {
    const node = conn.node
    if (this.conns.get(node) === conn) this.conns.delete(node)
    if (err === undefined || this.closed) return
    const previous = this.failures.get(node)
    // the first failure is news; the redials of a node that stays away are not
    if (previous === undefined) this.log.warn({ node, addr: conn.address, err: err.message }, 'backhaul connection failed')
    else this.log.debug({ node, addr: conn.address, err: err.message }, 'backhaul redial failed')
    if (conn.connectedOnce) {
      // it worked and then broke: routing avoids the node until a redial — right now — succeeds
      if (previous === undefined && this.reachability !== undefined) {
        this.failures.set(node, { until: 0, delayMs: 0, err, addr: conn.address, probe: undefined })
        this.reachability(node, false)
        this.probe(node)
      }
      return
    }
    this.counters.dialFailures++
    clearTimeout(previous?.probe)
    const delayMs = Math.min(MAX_RETRY_DELAY_MS, previous === undefined || previous.delayMs === 0 ? this.init.retryDelayMs ?? 200 : previous.delayMs * 2)
    const probe = this.reachability === undefined ? undefined : setTimeout(() => this.probe(node), delayMs)
    probe?.unref()
    this.failures.set(node, { until: performance.now() + delayMs, delayMs, err, addr: conn.address, probe })
    if (previous === undefined) this.reachability?.(node, false)
  }

  /** Redials an unreachable node without waiting for traffic (routing sends it none meanwhile). */
  private probe(node: string): void {
    const failed = this.failures.get(node)
    if (failed === undefined || this.closed) return
    failed.probe = undefined
    const existing = this.conns.get(node)
    if (existing !== undefined && existing.usable) return // a dial is under way; its outcome decides
    // a node that restarted may listen elsewhere now: dial what its record says today
    const addr = this.init.addressOf === undefined ? failed.addr : this.init.addressOf(node)
    if (addr === undefined) { this.log.debug({ node }, 'backhaul probe stopped: the node publishes no backhaul address'); return }
    this.dial(node, addr)
  }
}

function splitHostPort(addr: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(addr)
  if (m === null) return undefined
  const port = Number(m[3])
  return port >= 1 && port <= 65535 ? { host: m[1] ?? m[2], port } : undefined
}
