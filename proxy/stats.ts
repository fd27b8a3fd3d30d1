/**
 * Counters per lifecycle phase, plain numbers so the hot path only increments fields. The metrics issue
 * turns them into prom-client counters by reading this object on scrape.
 */
export interface ProxyStats {
  /** accept */
  connectionsAccepted: number
  connectionsOpen: number
  /** handshake */
  tlsHandshakes: number
  tlsHandshakeFailures: number
  pgSslRequests: number
  /** route */
  requests: number
  routeErrors: Record<string, number>
  queued: number
  queueTimeouts: number
  queueRejected: number
  /** connect */
  upstreamConnects: number
  upstreamConnectFailures: number
  upstreamReused: number
  retries: number
  /** forward / finish */
  responses: number
  clientErrors: Record<string, number>
  streamsForwarded: number
  upgrades: number
  h2Streams: number
}

export function newProxyStats(): ProxyStats {
  return {
    connectionsAccepted: 0,
    connectionsOpen: 0,
    tlsHandshakes: 0,
    tlsHandshakeFailures: 0,
    pgSslRequests: 0,
    requests: 0,
    routeErrors: {},
    queued: 0,
    queueTimeouts: 0,
    queueRejected: 0,
    upstreamConnects: 0,
    upstreamConnectFailures: 0,
    upstreamReused: 0,
    retries: 0,
    responses: 0,
    clientErrors: {},
    streamsForwarded: 0,
    upgrades: 0,
    h2Streams: 0,
  }
}

export function countError(table: Record<string, number>, code: string): void {
  table[code] = (table[code] ?? 0) + 1
}
