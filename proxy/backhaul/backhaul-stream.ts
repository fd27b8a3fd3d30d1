import { Duplex } from 'node:stream'
import { BACKHAUL_LIMITS } from '../../schemas/backhaul.js'
import type { FrameWriter } from './frame-writer.js'
import { controlFrame, F_FIN, MAX_DATA_FRAME, windowFrame } from './frames.js'

const WINDOW = BACKHAUL_LIMITS.streamWindowBytes
/** Consumed bytes are granted back in batches of this many (a WINDOW frame per 64 KiB, not per chunk). */
export const GRANT_AT = WINDOW / 4
/** DATA chunks this large mean a bulk transfer (a full TLS record is 16 KiB). */
const COALESCE_FROM = 8 * 1024

/** The connection a stream lives on, as the stream sees it. */
export interface StreamHost {
  readonly writer: FrameWriter
  /** The stream is over on this side; `tellPeer` when the worker does not know yet (an RST goes out). */
  released(stream: BackhaulStream, tellPeer: boolean): void
}

/**
 * One proxied connection to a Machine on another node, as the edge's proxy sees it: a Duplex standing in
 * for the Machine's socket (the proxy calls only stream methods and `setNoDelay`). Bytes travel as DATA
 * frames within a per-stream window (256 KiB each way), so one slow client never stalls the other streams
 * of the connection; `end()` is a half-close (FIN), `destroy()` a reset (RST).
 */
export class BackhaulStream extends Duplex {
  /** Bytes we may still send before the worker grants more. */
  private sendWindow = WINDOW
  /** Bytes the worker may still send: it must never go below zero. */
  private recvWindow = WINDOW
  /** Received bytes the reader has taken but the worker was not yet told about. */
  private unacked = 0
  /** The reader's buffer is full: grants wait for the next read. */
  private readBlocked = false
  private parked: { chunk: Buffer; cb: (err?: Error | null) => void } | undefined
  private finSent = false
  private finReceived = false
  /** No frame may go out for it any more (reset either way, or released). */
  private gone = false

  constructor(private readonly host: StreamHost, readonly id: number, readonly node: string, readonly machineId: string) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024 })
  }

  /** Socket look-alikes: Nagle and keep-alive belong to the backhaul connection, which has them set. */
  setNoDelay(): this { return this }
  setKeepAlive(): this { return this }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send(chunk, cb)
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.gone) this.host.writer.write(controlFrame(F_FIN, this.id))
    this.finSent = true
    cb()
  }

  override _read(): void {
    if (this.readBlocked) {
      this.readBlocked = false
      this.grant()
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.parked = undefined
    if (!this.gone) {
      this.gone = true
      this.host.released(this, !(this.finSent && this.finReceived))
    }
    cb(err)
  }

  // ---- frames from the worker (the connection dispatches them) ----

  /** Returns false when the worker overran the window it was given (a protocol error). */
  onData(chunk: Buffer): boolean {
    this.recvWindow -= chunk.length
    if (this.recvWindow < 0) return false
    if (this.finReceived || this.destroyed) return true // late bytes of a stream being torn down
    this.unacked += chunk.length
    if (this.coalesced !== undefined) { this.coalesced.push(chunk); return true }
    if (chunk.length >= COALESCE_FROM) {
      // a bulk transfer: TLS hands over 16 KiB records one by one; the reader gets the turn's records as one
      // buffer (one write to its client instead of four), small messages still go through at once
      this.coalesced = [chunk]
      setImmediate(this.flushCoalesced)
      return true
    }
    this.deliver(chunk)
    return true
  }

  onFin(): void {
    if (this.finReceived) return
    this.flushCoalesced()
    this.finReceived = true
    this.push(null)
  }

  private coalesced: Buffer[] | undefined

  private readonly flushCoalesced = (): void => {
    const parts = this.coalesced
    if (parts === undefined) return
    this.coalesced = undefined
    if (this.destroyed) return
    this.deliver(parts.length === 1 ? parts[0] : Buffer.concat(parts))
  }

  private deliver(chunk: Buffer): void {
    if (!this.push(chunk)) this.readBlocked = true
    else this.grant()
  }

  /** The worker reset it: with a reason it failed (the proxy sees the error), without one the Machine closed. */
  onRst(err: Error | undefined): void {
    if (this.gone) return
    this.gone = true
    if (err !== undefined) { this.destroy(err); return }
    // the Machine closed its socket: what it sent is still read before the stream closes, as from a socket
    if (!this.finReceived) this.onFin()
    if (this.readableEnded) this.destroy()
    else this.once('end', () => this.destroy())
  }

  onWindow(bytes: number): void {
    this.sendWindow += bytes
    const p = this.parked
    if (p !== undefined) {
      this.parked = undefined
      this.send(p.chunk, p.cb)
    }
  }

  private send(chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (this.gone) { cb(); return } // the Machine side is closed: like bytes sent into a closed socket
    let off = 0
    const len = chunk.length
    while (off < len) {
      if (this.sendWindow <= 0) {
        this.parked = { chunk: off === 0 ? chunk : chunk.subarray(off), cb }
        return
      }
      const n = Math.min(len - off, this.sendWindow, MAX_DATA_FRAME)
      this.host.writer.data(this.id, off === 0 && n === len ? chunk : chunk.subarray(off, off + n))
      this.sendWindow -= n
      off += n
    }
    this.host.writer.afterDrain(cb)
  }

  private grant(): void {
    if (this.unacked < GRANT_AT || this.gone) return
    this.host.writer.write(windowFrame(this.id, this.unacked))
    this.recvWindow += this.unacked
    this.unacked = 0
  }
}
