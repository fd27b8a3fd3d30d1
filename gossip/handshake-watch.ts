import type { ConnectionProtector, MessageStream, StreamCloseEvent } from '@libp2p/interface'

/**
 * A peer with a different fleet key does not get a clear error: its bytes decrypt to garbage and the
 * connection dies with a bare ECONNRESET or "Message length too long" (PERF-NOTES). libp2p only tells its
 * debug log, so we watch every raw connection from the moment the fleet key wraps it: one that closes
 * before it became a libp2p connection failed its handshake, and we say what that likely means.
 */
export interface HandshakeFailure {
  /** Remote address of the raw connection, without `/p2p/…`. */
  remoteAddr: string
  direction: 'inbound' | 'outbound'
  /** Absent when the other side hung up first (it failed to decrypt us and closed). */
  error: Error | undefined
}

export class HandshakeWatch {
  private readonly pending = new Map<string, number>() // remote addr → raw connections not yet upgraded

  constructor(private readonly onFailure: (f: HandshakeFailure) => void) {}

  /** Wraps the private-network protector; libp2p calls `protect` first on every new raw connection. */
  protector(inner: ConnectionProtector): ConnectionProtector {
    return {
      protect: async (conn, options) => {
        this.watch(conn)
        return await inner.protect(conn, options)
      },
    }
  }

  /** Call for every `connection:open`: that raw connection completed its handshake. */
  upgraded(remoteAddr: string): void {
    this.pending.delete(stripPeer(remoteAddr))
  }

  private watch(conn: MessageStream): void {
    const addr = stripPeer(String((conn as MessageStream & { remoteAddr?: unknown }).remoteAddr ?? 'unknown'))
    this.pending.set(addr, (this.pending.get(addr) ?? 0) + 1)
    conn.addEventListener('close', (evt) => {
      const stillPending = this.pending.has(addr)
      const left = (this.pending.get(addr) ?? 1) - 1
      if (left <= 0) this.pending.delete(addr)
      else this.pending.set(addr, left)
      // with or without an error: a peer that failed to decrypt us often just closes before we fail ourselves
      if (stillPending) this.onFailure({ remoteAddr: addr, direction: conn.direction, error: (evt as StreamCloseEvent).error })
    }, { once: true })
  }
}

function stripPeer(addr: string): string {
  const i = addr.indexOf('/p2p/')
  return i === -1 ? addr : addr.slice(0, i)
}
