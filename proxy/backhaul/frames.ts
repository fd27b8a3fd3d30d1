import { BACKHAUL_LIMITS } from '../../schemas/backhaul.js'

/**
 * The backhaul's framing (docs/backhaul.md): every frame is a 9-byte header — type (u8), stream id (u32),
 * payload length (u32), big-endian — then the payload. Streams are opened only by the edge (odd ids,
 * increasing); id 0 is the connection itself (PING, PONG, GOAWAY).
 *
 *   OPEN       edge → worker   payload: BackhaulOpen JSON (schemas/backhaul.ts)
 *   OPEN_OK    worker → edge   the Machine accepted; bytes flow from now on
 *   OPEN_FAIL  worker → edge   payload: BackhaulRefusal JSON; the stream is gone
 *   DATA       both            payload: stream bytes, within the receiver's window
 *   FIN        both            no more DATA from this side (TCP half-close)
 *   RST        both            the stream is gone; payload: BackhaulRefusal JSON when it failed
 *   WINDOW     both            payload: u32 bytes the sender may send more (flow control per stream)
 *   PING/PONG  both            payload: 8 bytes echoed; liveness of a quiet connection
 *   GOAWAY     worker → edge   no new streams on this connection (the worker is stopping)
 */
export const F_OPEN = 1
export const F_OPEN_OK = 2
export const F_OPEN_FAIL = 3
export const F_DATA = 4
export const F_FIN = 5
export const F_RST = 6
export const F_WINDOW = 7
export const F_PING = 8
export const F_PONG = 9
export const F_GOAWAY = 10
const LAST_TYPE = F_GOAWAY

export const HEADER_BYTES = 9
/** DATA larger than this is split (a whole window in one frame would delay the other streams). */
export const MAX_DATA_FRAME = 64 * 1024

export function frameHeader(type: number, id: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER_BYTES)
  b[0] = type
  b.writeUInt32BE(id, 1)
  b.writeUInt32BE(length, 5)
  return b
}

/** A whole small frame in one buffer. */
export function controlFrame(type: number, id: number, payload?: Buffer): Buffer {
  const len = payload?.length ?? 0
  const b = Buffer.allocUnsafe(HEADER_BYTES + len)
  b[0] = type
  b.writeUInt32BE(id, 1)
  b.writeUInt32BE(len, 5)
  if (payload !== undefined) payload.copy(b, HEADER_BYTES)
  return b
}

export function windowFrame(id: number, bytes: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER_BYTES + 4)
  b[0] = F_WINDOW
  b.writeUInt32BE(id, 1)
  b.writeUInt32BE(4, 5)
  b.writeUInt32BE(bytes, HEADER_BYTES)
  return b
}

/** What a Deframer hands on. `onData` may get one frame's payload in several pieces (as they arrive). */
export interface FrameSink {
  onControl(type: number, id: number, payload: Buffer): void
  onData(id: number, chunk: Buffer): void
  onProtocolError(message: string): void
}

/**
 * Splits the byte stream into frames with as little copying as possible: DATA payloads are passed on as
 * slices of the received chunk, as soon as they arrive; only headers and control payloads that straddle
 * two chunks are copied.
 */
export class Deframer {
  private readonly head = Buffer.allocUnsafe(HEADER_BYTES)
  private headFill = 0
  /** Bytes of the current DATA frame still to come (0: between frames). */
  private dataLeft = 0
  private dataId = 0
  private ctrl: Buffer | undefined
  private ctrlFill = 0
  private ctrlType = 0
  private ctrlId = 0
  private failed = false

  constructor(private readonly sink: FrameSink) {}

  feed(chunk: Buffer): void {
    let off = 0
    const len = chunk.length
    while (off < len && !this.failed) {
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, len - off)
        this.dataLeft -= n
        this.sink.onData(this.dataId, off === 0 && n === len ? chunk : chunk.subarray(off, off + n))
        off += n
        continue
      }
      if (this.ctrl !== undefined) {
        const n = Math.min(this.ctrl.length - this.ctrlFill, len - off)
        chunk.copy(this.ctrl, this.ctrlFill, off, off + n)
        this.ctrlFill += n
        off += n
        if (this.ctrlFill === this.ctrl.length) {
          const payload = this.ctrl
          this.ctrl = undefined
          this.sink.onControl(this.ctrlType, this.ctrlId, payload)
        }
        continue
      }
      let type: number
      let id: number
      let size: number
      if (this.headFill === 0 && len - off >= HEADER_BYTES) {
        type = chunk[off]
        id = chunk.readUInt32BE(off + 1)
        size = chunk.readUInt32BE(off + 5)
        off += HEADER_BYTES
      } else {
        const n = Math.min(HEADER_BYTES - this.headFill, len - off)
        chunk.copy(this.head, this.headFill, off, off + n)
        this.headFill += n
        off += n
        if (this.headFill < HEADER_BYTES) return
        this.headFill = 0
        type = this.head[0]
        id = this.head.readUInt32BE(1)
        size = this.head.readUInt32BE(5)
      }
      off += this.frame(type, id, size, chunk, off)
    }
  }

  /** A header was read and the payload starts at chunk[off]: returns the payload bytes consumed here. */
  private frame(type: number, id: number, size: number, chunk: Buffer, off: number): number {
    if (type === 0 || type > LAST_TYPE) { this.fail(`unknown frame type ${type}`); return 0 }
    if (type === F_DATA) {
      if (size > BACKHAUL_LIMITS.streamWindowBytes) { this.fail(`DATA frame of ${size} bytes exceeds the stream window`); return 0 }
      this.dataLeft = size
      this.dataId = id
      return 0 // the loop passes the payload on as it arrives
    }
    if (size > BACKHAUL_LIMITS.controlPayloadBytes) { this.fail(`control frame ${type} of ${size} bytes exceeds ${BACKHAUL_LIMITS.controlPayloadBytes}`); return 0 }
    if (chunk.length - off >= size) {
      this.sink.onControl(type, id, size === 0 ? EMPTY : chunk.subarray(off, off + size))
      return size
    }
    this.ctrl = Buffer.allocUnsafe(size) // the rest arrives with the next chunk(s)
    this.ctrlFill = 0
    this.ctrlType = type
    this.ctrlId = id
    return 0
  }

  private fail(message: string): void {
    this.failed = true
    this.sink.onProtocolError(message)
  }
}

const EMPTY = Buffer.alloc(0)
