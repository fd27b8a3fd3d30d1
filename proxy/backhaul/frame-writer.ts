import type { Socket } from 'node:net'
import { F_DATA, frameHeader, HEADER_BYTES } from './frames.js'

/** Payloads up to this size are copied behind their header (one buffer); bigger ones are written as two. */
const COPY_BELOW = 16 * 1024

/**
 * Writes frames to a backhaul connection. The frames of one event-loop turn — many streams answering in
 * the same poll phase — leave as one TLS write (cork now, uncork on setImmediate: the socket is never
 * corked across turns), so busy connections pay one record and one syscall for many small frames.
 */
export class FrameWriter {
  private corked = false
  private drainWaiters: Array<() => void> = []

  constructor(private readonly socket: Socket) {
    socket.on('drain', () => {
      const waiters = this.drainWaiters
      this.drainWaiters = []
      for (const w of waiters) w()
    })
  }

  write(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      setImmediate(this.uncork)
    }
    this.socket.write(frame)
  }

  data(id: number, payload: Buffer): void {
    const len = payload.length
    if (len < COPY_BELOW) {
      const b = Buffer.allocUnsafe(HEADER_BYTES + len)
      b[0] = F_DATA
      b.writeUInt32BE(id, 1)
      b.writeUInt32BE(len, 5)
      payload.copy(b, HEADER_BYTES)
      this.write(b)
      return
    }
    this.write(frameHeader(F_DATA, id, len))
    this.write(payload)
  }

  /** True while the connection holds more than its high-water mark: producers wait for `afterDrain`. */
  get congested(): boolean {
    return this.socket.writableNeedDrain
  }

  /** Runs `cb` once the connection drained (at once when it is not congested). */
  afterDrain(cb: () => void): void {
    if (this.socket.writableNeedDrain && !this.socket.destroyed) this.drainWaiters.push(cb)
    else cb()
  }

  /** The connection is gone: nobody waits for a drain that will not come. */
  dropWaiters(): void {
    this.drainWaiters = []
  }

  private readonly uncork = (): void => {
    this.corked = false
    this.socket.uncork()
  }
}
