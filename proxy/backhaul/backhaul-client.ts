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

interface DialFailure { until: number; delayMs: number; err: EdgeProxyError }

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

  constructor(private readonly init: BackhaulClientInit, private readonly log: Logger) {}

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
        this.failures.delete(node)
        this.log.debug({ node, addr: c.address }, 'backhaul connected')
      },
      closed: (c, err) => this.onClosed(c, err),
      session: (_c, session) => { this.sessions.set(node, session) },
    })
    this.conns.set(node, conn)
    return conn
  }

  private onClosed(conn: EdgeConnection, err: EdgeProxyError | undefined): void {
    if (this.conns.get(conn.node) === conn) this.conns.delete(conn.node)
    if (err === undefined || this.closed) return
    this.log.warn({ node: conn.node, addr: conn.address, err: err.message }, 'backhaul connection failed')
    if (conn.connectedOnce) return // it worked and then broke: the next open redials at once
    this.counters.dialFailures++
    const previous = this.failures.get(conn.node)
    const delayMs = Math.min(MAX_RETRY_DELAY_MS, previous === undefined ? this.init.retryDelayMs ?? 200 : previous.delayMs * 2)
    this.failures.set(conn.node, { until: performance.now() + delayMs, delayMs, err })
  }
}

function splitHostPort(addr: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(addr)
  if (m === null) return undefined
  const port = Number(m[3])
  return port >= 1 && port <= 65535 ? { host: m[1] ?? m[2], port } : undefined
}
