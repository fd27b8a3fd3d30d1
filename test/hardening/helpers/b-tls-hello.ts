import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'

/**
 * A hand-built TLS 1.2 ClientHello, for what OpenSSL-based scanners cannot ask here: this sslscan is built
 * without zlib, so it cannot offer TLS compression (CRIME). We offer the compression methods we choose and
 * read the method the server picks from its ServerHello (RFC 5246 §7.4.1) — or its alert.
 */
export interface HelloAnswer {
  /** The ServerHello's compression_method (0 = null), when the server answered with a ServerHello. */
  compression?: number
  /** The server's cipher suite id, with its ServerHello. */
  cipher?: number
  /** The alert description, when the server refused the hello with an alert. */
  alert?: number
  /** The server closed without either. */
  closed: boolean
}

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff])
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff])
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b])
const ext = (type: number, body: Buffer): Buffer => Buffer.concat([u16(type), vec16(body)])

export function clientHello12(servername: string, compressionMethods: number[]): Buffer {
  const ciphers = [0xc02b, 0xc02c, 0xc02f, 0xc030, 0xcca9, 0xcca8] // ECDHE-{ECDSA,RSA}-AES-GCM, CHACHA20
  const host = Buffer.from(servername, 'ascii')
  const extensions = Buffer.concat([
    ext(0x0000, vec16(Buffer.concat([Buffer.from([0]), vec16(host)]))), // server_name
    ext(0x000a, vec16(Buffer.concat([u16(0x001d), u16(0x0017)]))), // supported_groups: x25519, P-256
    ext(0x000b, Buffer.from([1, 0])), // ec_point_formats: uncompressed
    ext(0x000d, vec16(Buffer.concat([0x0403, 0x0804, 0x0401].map(u16)))), // signature_algorithms
    ext(0xff01, Buffer.from([0])), // renegotiation_info (empty: initial handshake)
  ])
  const body = Buffer.concat([
    u16(0x0303), randomBytes(32), Buffer.from([0]), // TLS 1.2, random, no session id
    vec16(Buffer.concat(ciphers.map(u16))),
    Buffer.from([compressionMethods.length, ...compressionMethods]),
    vec16(extensions),
  ])
  const handshake = Buffer.concat([Buffer.from([0x01]), u24(body.length), body])
  return Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), vec16(handshake)])
}

const PG_SSL_REQUEST = Buffer.from('0000000804d2162f', 'hex')

/**
 * Sends the hello and reads the first record of the answer (bounded by `timeoutMs`). With `postgres`, the
 * Postgres SSLRequest goes first and the hello only after the server's `S`, as libpq does.
 */
export function sendHello(port: number, hello: Buffer, opts: { postgres?: boolean; timeoutMs?: number } = {}): Promise<HelloAnswer> {
  const timeoutMs = opts.timeoutMs ?? 10_000
  let awaitingS = opts.postgres === true
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    let buf = Buffer.alloc(0)
    const done = (a: HelloAnswer | Error): void => {
      clearTimeout(timer)
      socket.destroy()
      if (a instanceof Error) reject(a)
      else resolve(a)
    }
    const timer = setTimeout(() => done(new Error(`no answer to the ClientHello within ${timeoutMs} ms`)), timeoutMs)
    socket.on('connect', () => socket.write(awaitingS ? PG_SSL_REQUEST : hello))
    socket.on('error', () => done({ closed: true }))
    socket.on('close', () => done({ closed: true }))
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      if (awaitingS) {
        if (buf[0] !== 0x53) { done(new Error(`the SSLRequest was answered with ${JSON.stringify(buf.toString('latin1'))}, not S`)); return }
        awaitingS = false
        buf = buf.subarray(1)
        socket.write(hello)
      }
      if (buf.length < 5) return
      const len = buf.readUInt16BE(3)
      if (buf.length < 5 + len) return
      const record = buf.subarray(5, 5 + len)
      if (buf[0] === 0x15) { done({ alert: record[1], closed: false }); return }
      if (buf[0] !== 0x16 || record[0] !== 0x02) { done(new Error(`unexpected first record type ${buf[0]} / ${record[0]}`)); return }
      // ServerHello: type(1) length(3) version(2) random(32) session_id(1+n) cipher(2) compression(1)
      const sidLen = record[4 + 2 + 32]
      const at = 4 + 2 + 32 + 1 + sidLen
      done({ cipher: record.readUInt16BE(at), compression: record[at + 2], closed: false })
    })
  })
}
