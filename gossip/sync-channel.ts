import type { Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { EdgeProxyError } from '../schemas/errors.js'
import { type SyncFrame, SyncFrameSchema } from '../schemas/gossip-messages.js'
import { decodeWire, encodeWire } from './wire-codec.js'

/** One `/edgeproxy/sync/1` stream as typed frames: length-prefixed CBOR, size-limited, every read timed. */
export interface SyncChannelOptions {
  maxFrameBytes: number
  frameTimeoutMs: number
  /** Aborts every pending read and write (session deadline, node stopping). */
  signal: AbortSignal
}

/** The peer broke the protocol (bad frame, wrong order): counted against it, unlike a timeout or reset. */
export class SyncProtocolError extends EdgeProxyError {
  constructor(message: string) {
    super('EP_SYNC_FAILED', message)
  }
}

type FrameOf<T extends SyncFrame['t']> = Extract<SyncFrame, { t: T }>

export class SyncChannel {
  private readonly lp: LengthPrefixedStream<Stream>

  constructor(readonly stream: Stream, private readonly opts: SyncChannelOptions) {
    this.lp = lpStream(stream, { maxDataLength: opts.maxFrameBytes, maxBufferSize: opts.maxFrameBytes + 64 * 1024 })
  }

  async read<T extends SyncFrame['t']>(...expected: T[]): Promise<FrameOf<T>> {
    const signal = AbortSignal.any([this.opts.signal, AbortSignal.timeout(this.opts.frameTimeoutMs)])
    let bytes: Uint8Array
    try {
      bytes = (await this.lp.read({ signal })).subarray()
    } catch (err) {
      const name = (err as Error).name
      if (name === 'InvalidDataLengthError') throw new SyncProtocolError(`sync frame over ${this.opts.maxFrameBytes} bytes`)
      throw err
    }
    const frame = decodeWire(SyncFrameSchema, bytes, this.opts.maxFrameBytes)
    if (!frame.ok) throw new SyncProtocolError(`bad sync frame (${frame.reason}): ${frame.detail}`)
    if (!(expected as string[]).includes(frame.value.t)) {
      throw new SyncProtocolError(`expected a ${expected.join(' or ')} frame, got ${frame.value.t}`)
    }
    return frame.value as FrameOf<T>
  }

  async write(frame: SyncFrame): Promise<void> {
    const bytes = encodeWire(frame)
    if (bytes.byteLength > this.opts.maxFrameBytes) {
      throw new EdgeProxyError('EP_SYNC_FAILED', `sync frame of ${bytes.byteLength} bytes exceeds the ${this.opts.maxFrameBytes}-byte limit`)
    }
    const signal = AbortSignal.any([this.opts.signal, AbortSignal.timeout(this.opts.frameTimeoutMs)])
    await this.lp.write(bytes, { signal })
  }
}
