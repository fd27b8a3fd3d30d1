import { randomFillSync } from 'node:crypto'
import type { Stream, StreamMessageEvent } from '@libp2p/interface'

/**
 * One long-lived libp2p ping stream (`/ipfs/ping/1.0.0`) to a peer: 32 random bytes out, the same 32 back,
 * as many times as asked. The ping service answers every ping sent on a stream, so a stream per peer replaces
 * a stream per ping — opening one costs multistream-select, a peer-store update and several frames, and on a
 * 20-node fleet that churn was a large part of an idle node's CPU (docs/benchmarks.md).
 */
export const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const PING_BYTES = 32

interface Pending { sent: Uint8Array; start: number; resolve(rtt: number): void; reject(err: Error): void; timer: NodeJS.Timeout }

export class PingLine {
  private pending: Pending | undefined
  private readonly echo = Buffer.alloc(PING_BYTES)
  private echoed = 0
  private closed = false

  constructor(private readonly stream: Stream) {
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('close', this.onClose)
  }

  get isOpen(): boolean { return !this.closed && this.stream.status === 'open' }

  /** Round-trip time in ms (sub-millisecond resolution); rejects on timeout or a closed or broken stream. */
  async ping(timeoutMs: number): Promise<number> {
    if (!this.isOpen) throw new Error('ping stream closed')
    if (this.pending !== undefined) throw new Error('a ping is already in flight on this stream')
    const sent = randomFillSync(new Uint8Array(PING_BYTES))
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`no ping reply within ${timeoutMs} ms`)), timeoutMs)
      this.pending = { sent, start: performance.now(), resolve, reject, timer }
      this.echoed = 0
      this.stream.send(sent)
    })
  }

  close(): void {
    if (this.closed) return
    this.fail(new Error('ping stream closed'))
    this.stream.abort(new Error('ping line closed'))
  }

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    const bytes = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
    const p = this.pending
    if (p === undefined || this.echoed + bytes.byteLength > PING_BYTES) {
      this.fail(new Error('ping reply without a ping, or longer than the ping'))
      this.stream.abort(new Error('unexpected ping bytes'))
      return
    }
    this.echo.set(bytes, this.echoed)
    this.echoed += bytes.byteLength
    if (this.echoed < PING_BYTES) return
    this.pending = undefined
    clearTimeout(p.timer)
    if (Buffer.compare(this.echo, p.sent) === 0) p.resolve(performance.now() - p.start)
    else {
      p.reject(new Error('ping reply differs from the ping'))
      this.stream.abort(new Error('wrong ping reply'))
    }
  }

  private readonly onClose = (): void => {
    this.closed = true
    this.fail(new Error('ping stream closed'))
  }

  private fail(err: Error): void {
    const p = this.pending
    if (p === undefined) return
    this.pending = undefined
    clearTimeout(p.timer)
    p.reject(err)
  }
}
