import type { Socket } from 'node:net'
import { EdgeProxyError } from '../../schemas/errors.js'

/** Postgres protocol codes (PostgreSQL docs, "Message Formats"). */
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const TLS_HANDSHAKE_RECORD = 0x16

export type PgOpening = 'ssl-request' | 'direct-tls'

/**
 * The first phase of `pg_tls` (FLY-SPEC §7, shared/TOOLCHAIN.md §2): read the 8-byte SSLRequest and
 * answer `S`; a GSSENCRequest gets `N` and the client may then ask for SSL. Bytes sent after the
 * SSLRequest but before our `S` are dropped: they were not protected by TLS (CVE-2021-23214).
 * Direct TLS (libpq ≥ 17) is recognised by its first byte and reported as such.
 */
export function readPgOpening(socket: Socket, timeoutMs: number): Promise<{ opening: PgOpening; prefix: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let buf: Buffer | undefined
    const cleanup = (): void => {
      clearTimeout(timer)
      socket.removeListener('data', onData)
      socket.removeListener('close', onClose)
      socket.pause()
    }
    const fail = (err: EdgeProxyError): void => { cleanup(); reject(err) }
    const onClose = (): void => fail(new EdgeProxyError('EP_BAD_REQUEST', 'client closed before the Postgres SSLRequest'))
    const onData = (chunk: Buffer): void => {
      buf = buf === undefined ? chunk : Buffer.concat([buf, chunk])
      if (buf[0] === TLS_HANDSHAKE_RECORD) { cleanup(); resolve({ opening: 'direct-tls', prefix: buf }); return }
      while (buf !== undefined && buf.length >= 8) {
        const len = buf.readInt32BE(0)
        const code = buf.readInt32BE(4)
        if (len === 8 && code === SSL_REQUEST) {
          cleanup()
          socket.write('S')
          resolve({ opening: 'ssl-request', prefix: undefined }) // anything after the 8 bytes is dropped
          return
        }
        if (len === 8 && code === GSSENC_REQUEST) {
          socket.write('N')
          buf = buf.length > 8 ? buf.subarray(8) : undefined
          continue
        }
        if (len === 16 && code === CANCEL_REQUEST) {
          fail(new EdgeProxyError('EP_BAD_REQUEST', 'a plaintext CancelRequest cannot be routed on a pg_tls port'))
          return
        }
        socket.write(pgErrorResponse('08P01', 'this port requires TLS: connect with sslmode=require'))
        fail(new EdgeProxyError('EP_BAD_REQUEST', 'plaintext Postgres startup on a pg_tls port'))
        return
      }
    }
    const timer = setTimeout(() => fail(new EdgeProxyError('EP_REQUEST_TIMEOUT', `no Postgres SSLRequest within ${timeoutMs} ms`)), timeoutMs)
    socket.on('data', onData)
    socket.on('close', onClose)
    socket.resume()
  })
}

/** A Postgres ErrorResponse message, so psql prints why the proxy refused (FATAL severity). */
export function pgErrorResponse(sqlState: string, message: string): Buffer {
  const fields = `SFATAL\0VFATAL\0C${sqlState}\0M${message}\0\0`
  const body = Buffer.from(fields, 'utf8')
  const out = Buffer.allocUnsafe(5 + body.length)
  out[0] = 0x45 // 'E'
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}
