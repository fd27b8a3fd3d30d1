import type { Socket } from 'node:net'
import type { PooledConnection, UpstreamPool } from './upstream-pool.js'

/** What an upstream connection reports to the exchange that currently owns it. */
export interface UpstreamOwner {
  onUpstreamData(chunk: Buffer): void
  onUpstreamDrain(): void
  /** The Machine half-closed (FIN). */
  onUpstreamEnd(conn: UpstreamConn): void
  onUpstreamClose(conn: UpstreamConn, err: Error | undefined): void
}

/**
 * A keep-alive connection to a Machine. Handlers are installed once and dispatch to the current owner
 * (no closures per request: shared/PERF-NOTES.md). Without an owner it sits in the pool, where any byte
 * from the Machine or a close means it is no longer usable.
 */
export class UpstreamConn implements PooledConnection {
  owner: UpstreamOwner | undefined
  idleSince = 0
  /** Responses completed on it: a reused connection may be a stale one (retry once on a fresh one). */
  responses = 0
  private lastError: Error | undefined

  constructor(
    readonly socket: Socket,
    readonly host: string,
    readonly port: number,
    private readonly pool: UpstreamPool<UpstreamConn>,
  ) {
    socket.on('data', (chunk: Buffer) => {
      const o = this.owner
      if (o !== undefined) o.onUpstreamData(chunk)
      else this.discard() // bytes on an idle connection: the framing is lost
    })
    socket.on('drain', () => this.owner?.onUpstreamDrain())
    socket.on('end', () => {
      const o = this.owner
      if (o !== undefined) o.onUpstreamEnd(this)
      else this.discard()
    })
    socket.on('error', (err) => { this.lastError = err })
    socket.on('close', () => {
      const o = this.owner
      this.owner = undefined
      if (o !== undefined) o.onUpstreamClose(this, this.lastError)
      else this.pool.remove(this)
    })
  }

  get alive(): boolean { return !this.socket.destroyed && this.socket.writable }

  discard(): void {
    this.owner = undefined
    this.pool.remove(this)
    this.socket.destroy()
  }
}
