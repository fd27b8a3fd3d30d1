import type { RequestMetrics } from './observe/request-metrics.js'
import type { Logger } from 'pino'
import type { HttpLimits } from './http/limits.js'
import type { UpstreamPool } from './http/upstream-pool.js'
import type { MachineConnector } from './machine-connector.js'
import type { Balancer } from './routing/balancer.js'
import type { PortPlan } from './routing/port-plan.js'
import type { Router } from './routing/router.js'
import type { RoutingIndex } from './routing/routing-index.js'
import type { ProxyStats } from './stats.js'
import type { UpstreamConn } from './http/upstream-conn.js'
import type { TlsFront } from './handlers/tls-front.js'

export interface ProxyTimeouts {
  /** A request head must arrive completely within this (slowloris). */
  headersMs: number
  /** A keep-alive client connection with no request in progress is closed after this. */
  idleMs: number
  /** A TLS or pg_tls handshake must finish within this. */
  handshakeMs: number
  /** stop(): in-flight work may finish within this, then everything is closed. */
  drainMs: number
}

/** A coarse clock: the sweeper advances it, the hot path reads a field instead of calling Date.now(). */
export interface CoarseClock {
  now: number
}

/** Something with timers the sweeper checks and that drains on stop (a client connection). */
export interface Session {
  sweep(now: number): void
  /** Stop after the work in flight; close at once when idle. */
  drain(): void
  destroy(): void
}

/** Everything a connection needs, shared by all connections of one proxy (built in proxy-server.ts). */
export interface ProxyContext {
  readonly index: RoutingIndex
  readonly balancer: Balancer
  readonly router: Router
  readonly pool: UpstreamPool<UpstreamConn>
  readonly connector: MachineConnector
  readonly stats: ProxyStats
  /** Per-request counts, phase latencies and the sampled request log (issue 10). */
  readonly requests: RequestMetrics
  readonly log: Logger
  /** This edge's region: Fly-Region and the suffix of request ids. */
  readonly region: string
  /** Server response header value. */
  readonly serverHeader: string
  readonly limits: HttpLimits
  readonly timeouts: ProxyTimeouts
  readonly clock: CoarseClock
  /** Where public port `p` listens on this node (dev maps 80→8080, 443→8443). */
  bindPortOf(publicPort: number): number
  readonly sessions: Set<Session>
  draining: boolean
}

/** A listening public port as connections see it; `plan` is replaced in place when apps change. */
export interface ListenerState {
  readonly publicPort: number
  plan: PortPlan
  /** The port's TLS handshake, created on first use when the front is tls or pg_tls. */
  tls: TlsFront | undefined
}

/** The client end of a connection, after any handshake. */
export interface ClientInfo {
  readonly ip: string
  readonly port: number
  /** The port the client connected to on this node (Fly-Forwarded-Port). */
  readonly localPort: number
  readonly localAddress: string
  /** TLS was terminated (X-Forwarded-Proto https). */
  readonly tls: boolean
  readonly servername: string | undefined
}
