import { connect } from 'node:tls'

/**
 * HTTP/2 frames written by hand, for requests no well-behaved client library would send (node:http2
 * refuses connection-specific headers, CR/LF in values, upper-case names…). Header blocks use HPACK
 * literals without indexing or Huffman (RFC 7541 §6.2.2), which every decoder must accept. The answer is
 * read as frame types only: HEADERS (a response), RST_STREAM or GOAWAY (a refusal) and their error codes.
 */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7, WINDOW_UPDATE: 8 } as const
const END_STREAM = 0x1
const END_HEADERS = 0x4

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream & 0x7fffffff, 5)
  return Buffer.concat([head, payload])
}

/** RFC 7541 §5.1 integer with an N-bit prefix (the first byte's high bits are `first`). */
function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1
  if (value < max) return Buffer.from([first | value])
  const out = [first | max]
  let v = value - max
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128) }
  out.push(v)
  return Buffer.from(out)
}

function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1')
  const v = Buffer.from(value, 'latin1')
  return Buffer.concat([Buffer.from([0x00]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v])
}

export interface RawH2Frame { type: number; flags: number; stream: number; payload: Buffer }

export interface RawH2Result {
  frames: RawH2Frame[]
  /** A HEADERS frame came back on stream 1: the request was answered. */
  answered: boolean
  /** RST_STREAM on stream 1, or GOAWAY: the error code. */
  resetCode: number | undefined
  goawayCode: number | undefined
}

/**
 * Opens TLS with ALPN h2 to 127.0.0.1:port (SNI `servername`), sends one request on stream 1 with exactly
 * these header fields (pseudo-headers included, in order) and optional DATA, then collects frames until
 * the server answers, resets, goes away or `timeoutMs` passes.
 */
export function rawH2Request(port: number, servername: string, headers: Array<[string, string]>, data?: Buffer, timeoutMs = 3000): Promise<RawH2Result> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername, ALPNProtocols: ['h2'], rejectUnauthorized: false })
    let buf = Buffer.alloc(0)
    const frames: RawH2Frame[] = []
    const done = (): void => {
      clearTimeout(timer)
      socket.destroy()
      const rst = frames.find((f) => f.type === FRAME.RST_STREAM && f.stream === 1)
      const goaway = frames.find((f) => f.type === FRAME.GOAWAY)
      resolve({
        frames,
        answered: frames.some((f) => f.type === FRAME.HEADERS && f.stream === 1),
        resetCode: rst?.payload.readUInt32BE(0),
        goawayCode: goaway?.payload.readUInt32BE(4),
      })
    }
    const timer = setTimeout(done, timeoutMs)
    socket.once('error', (err) => { clearTimeout(timer); if (frames.length > 0) done(); else reject(err) })
    socket.once('close', done)
    socket.once('secureConnect', () => {
      if (socket.alpnProtocol !== 'h2') { clearTimeout(timer); socket.destroy(); reject(new Error(`ALPN gave ${String(socket.alpnProtocol)}, not h2`)); return }
      const block = Buffer.concat(headers.map(([n, v]) => literal(n, v)))
      const out = [PREFACE, frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)), frame(FRAME.HEADERS, END_HEADERS | (data === undefined ? END_STREAM : 0), 1, block)]
      if (data !== undefined) out.push(frame(FRAME.DATA, END_STREAM, 1, data))
      socket.write(Buffer.concat(out))
    })
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3)
        if (buf.length < 9 + len) break
        const f = { type: buf[3], flags: buf[4], stream: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) }
        buf = buf.subarray(9 + len)
        frames.push(f)
        // acknowledge the server's settings, as a client must, so it goes on to answer
        if (f.type === FRAME.SETTINGS && (f.flags & 0x1) === 0) socket.write(frame(FRAME.SETTINGS, 0x1, 0, Buffer.alloc(0)))
        if ((f.type === FRAME.HEADERS && f.stream === 1) || (f.type === FRAME.RST_STREAM && f.stream === 1) || f.type === FRAME.GOAWAY) { done(); return }
      }
    })
  })
}
