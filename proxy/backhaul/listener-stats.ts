/** Counters of a worker's backhaul listener, for /metrics and tests. */
export interface BackhaulListenerStats {
  connectionsAccepted: number
  connectionsOpen: number
  /** TLS handshakes that failed: no certificate, another CA, not TLS at all, wrong version or ALPN. */
  handshakeFailures: number
  /** Handshakes that completed but whose certificate is not a usable fleet node certificate. */
  peersRejected: number
  opens: number
  /** OPENs answered with OPEN_FAIL (malformed, not this node's Machine, the Machine refused…). */
  refused: number
  streamsOpened: number
  protocolErrors: number
}

export function newListenerStats(): BackhaulListenerStats {
  return { connectionsAccepted: 0, connectionsOpen: 0, handshakeFailures: 0, peersRejected: 0, opens: 0, refused: 0, streamsOpened: 0, protocolErrors: 0 }
}
