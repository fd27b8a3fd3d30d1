/**
 * Byte-level tracker of `Transfer-Encoding: chunked` framing (RFC 9112 §7.1). The proxy forwards chunked
 * bodies as they are and only needs to know where the message ends; when a receiver cannot take chunked
 * (an HTTP/1.0 client, an h2 stream), `onData` receives the decoded payload ranges instead.
 * Strict on purpose: a size line that is not hex digits (plus `;extensions`) ending in CRLF is a framing
 * error, never a guess, because a lenient parser is what request smuggling exploits.
 */
const SIZE = 0
const SIZE_EXT = 1
const SIZE_LF = 2
const DATA = 3
const DATA_CR = 4
const DATA_LF = 5
const TRAILER_START = 6
const TRAILER_LINE = 7
const TRAILER_LF = 8
const END_LF = 9
const DONE = 10
const TRAILER_NAME = 11

const CR = 13
const LF = 10

/** A chunk size over 2^52 is an attack, not a body. */
const MAX_SIZE_DIGITS = 13

export const CHUNKED_ERROR = -2
export const CHUNKED_MORE = -1

export type ChunkDataSink = (buf: Buffer, start: number, end: number) => void

export class ChunkedScanner {
  private state = SIZE
  private size = 0
  private digits = 0
  /** Payload bytes left in the current chunk. */
  private remaining = 0
  /** Bytes of the current trailer / extension line, bounded like a header block. */
  private lineBytes = 0
  /** Payload bytes the size lines announced so far (a limit can act on a chunk before its data arrives). */
  payloadBytes = 0

  reset(): void {
    this.state = SIZE
    this.size = 0
    this.digits = 0
    this.remaining = 0
    this.lineBytes = 0
    this.payloadBytes = 0
  }

  get done(): boolean { return this.state === DONE }

  /**
   * Scans buf[start, end). Returns the index just past the message's last byte, CHUNKED_MORE when the
   * whole range belongs to the message and more is needed, or CHUNKED_ERROR on bad framing.
   */
  scan(buf: Buffer, start: number, end: number, onData?: ChunkDataSink): number {
    let i = start
    let state = this.state
    while (i < end) {
      if (state === DATA) {
        const take = Math.min(this.remaining, end - i)
        if (onData !== undefined) onData(buf, i, i + take)
        i += take
        this.remaining -= take
        if (this.remaining === 0) state = DATA_CR
        continue
      }
      const b = buf[i++]
      switch (state) {
        case SIZE: {
          const v = hexValue(b)
          if (v >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS) return this.fail()
            this.size = this.size * 16 + v
          } else if (this.digits === 0) {
            return this.fail()
          } else if (b === CR) {
            state = SIZE_LF
          } else if (b === 0x3b /* ; */) {
            state = SIZE_EXT
            this.lineBytes = 0
          } else {
            return this.fail()
          }
          break
        }
        case SIZE_EXT:
          if (b === CR) state = SIZE_LF
          else if (isControl(b) || ++this.lineBytes > 4096) return this.fail()
          break
        case SIZE_LF:
          if (b !== LF) return this.fail()
          if (this.size === 0) {
            state = TRAILER_START
          } else {
            state = DATA
            this.remaining = this.size
            this.payloadBytes += this.size
          }
          this.size = 0
          this.digits = 0
          break
        case DATA_CR:
          if (b !== CR) return this.fail()
          state = DATA_LF
          break
        case DATA_LF:
          if (b !== LF) return this.fail()
          state = SIZE
          break
        case TRAILER_START:
          if (b === CR) state = END_LF
          else if (!isTokenChar(b)) return this.fail()
          else { state = TRAILER_NAME; this.lineBytes = 1 }
          break
        case TRAILER_NAME:
          // a trailer is a field: a token, then a colon. A line that is not (a request line, say) must not
          // pass as one, or a parser that ends the message there sees a request where we saw a trailer
          if (b === 0x3a /* : */) state = TRAILER_LINE
          else if (!isTokenChar(b) || ++this.lineBytes > 65536) return this.fail()
          break
        case TRAILER_LINE:
          if (b === CR) state = TRAILER_LF
          else if ((isControl(b) && b !== 0x09) || ++this.lineBytes > 65536) return this.fail()
          break
        case TRAILER_LF:
          if (b !== LF) return this.fail()
          state = TRAILER_START
          break
        case END_LF:
          if (b !== LF) return this.fail()
          this.state = DONE
          return i
        default:
          return this.fail()
      }
    }
    this.state = state
    return CHUNKED_MORE
  }

  private fail(): number {
    this.state = DONE
    return CHUNKED_ERROR
  }
}

/** Controls other than HTAB, and DEL (CR and LF included: callers test those first where they are allowed). */
function isControl(b: number): boolean {
  return (b < 0x20 && b !== 0x09) || b === 0x7f
}

/** tchar (RFC 9110 §5.6.2). */
function isTokenChar(b: number): boolean {
  if (b >= 0x30 && b <= 0x39) return true
  const l = b | 0x20
  if (l >= 0x61 && l <= 0x7a) return true
  return b === 0x21 || (b >= 0x23 && b <= 0x27) || b === 0x2a || b === 0x2b || b === 0x2d || b === 0x2e || b === 0x5e || b === 0x5f || b === 0x60 || b === 0x7c || b === 0x7e
}

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30
  const l = b | 0x20
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10
  return -1
}

/** Frames a payload piece as one chunk (h2 → HTTP/1.1 bodies of unknown length). */
export function encodeChunk(data: Buffer): Buffer {
  const size = data.length.toString(16)
  const out = Buffer.allocUnsafe(size.length + 2 + data.length + 2)
  out.write(size, 0, 'latin1')
  out[size.length] = CR
  out[size.length + 1] = LF
  data.copy(out, size.length + 2)
  out[out.length - 2] = CR
  out[out.length - 1] = LF
  return out
}

export const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1')
