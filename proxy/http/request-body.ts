import { CHUNKED_ERROR, CHUNKED_MORE, type ChunkDataSink, ChunkedScanner } from './chunked.js'
import { BODY_CHUNKED, BODY_LENGTH, BODY_NONE, type RequestHead } from './request-head.js'

/** consume() result: the chunked framing of the body is invalid. */
export const BODY_INVALID = -1
/** consume() result: the body grew past the limit given to begin(). */
export const BODY_TOO_LARGE = -3

/**
 * Where a request body ends in the client's byte stream, by Content-Length or by chunked framing tracked
 * byte by byte; whatever follows belongs to the next (pipelined) request.
 */
export class RequestBodyFraming {
  /** The whole body has been seen (true for bodyless requests). */
  done = true
  /** consume() returned BODY_TOO_LARGE for this body. */
  tooLarge = false
  private kind = BODY_NONE
  private left = 0
  private limit = Infinity
  private readonly chunks = new ChunkedScanner()

  /** A Content-Length over `limit` is the caller's to refuse up front; a chunked body is checked as it comes. */
  begin(head: RequestHead, limit = Infinity): void {
    this.kind = head.bodyKind
    this.left = head.contentLength
    this.limit = limit
    this.tooLarge = false
    this.done = head.bodyKind === BODY_NONE
    if (head.bodyKind === BODY_CHUNKED) this.chunks.reset()
  }

  /**
   * How many leading bytes of buf belong to the body, BODY_INVALID or BODY_TOO_LARGE. `onData` receives the payload
   * (chunk framing removed) when the receiver cannot take chunked bytes as they are.
   */
  consume(buf: Buffer, onData?: ChunkDataSink): number {
    if (this.done) return 0
    if (this.kind === BODY_LENGTH) {
      const n = Math.min(this.left, buf.length)
      this.left -= n
      if (this.left === 0) this.done = true
      if (onData !== undefined && n > 0) onData(buf, 0, n)
      return n
    }
    const r = this.chunks.scan(buf, 0, buf.length, onData)
    if (r === CHUNKED_ERROR) { this.done = true; return BODY_INVALID }
    if (this.chunks.payloadBytes > this.limit) { this.done = true; this.tooLarge = true; return BODY_TOO_LARGE }
    if (r === CHUNKED_MORE) return buf.length
    this.done = true
    return r
  }
}
