import { STATUS_CODES } from 'node:http'
import type { EdgeProxyError } from '../schemas/errors.js'

/** Header that carries the stable error code to clients and scripts (issue 6, FLY-SPEC §4). */
export const ERROR_HEADER = 'edgeproxy-error'

/** The one-line body of a proxy-made error: code, what to do, request id. */
export function errorBody(err: EdgeProxyError, requestId: string): string {
  const message = err.message.replace(/[\r\n]+/g, ' ')
  return `${err.code}: ${message} (request id ${requestId})\n`
}

export interface ErrorResponseOptions {
  requestId: string
  server: string
  /** The client connection closes after this response. */
  close: boolean
  /** HEAD requests get the headers without the body. */
  head?: boolean
}

/** A complete HTTP/1.1 error response as bytes, written in one go. */
export function errorResponse(err: EdgeProxyError, o: ErrorResponseOptions): Buffer {
  const body = errorBody(err, o.requestId)
  const bodyBytes = Buffer.byteLength(body)
  const head = `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\n`
    + `Server: ${o.server}\r\n`
    + `Content-Type: text/plain; charset=utf-8\r\n`
    + `Content-Length: ${bodyBytes}\r\n`
    + `${ERROR_HEADER}: ${err.code}\r\n`
    + `Fly-Request-Id: ${o.requestId}\r\n`
    + (o.close ? 'Connection: close\r\n' : '')
    + '\r\n'
  return Buffer.from(o.head === true ? head : head + body, 'utf8')
}

/** `force_https`: 301 to the same host, path and query on https (FLY-SPEC §7). */
export function redirectResponse(location: string, o: ErrorResponseOptions): Buffer {
  const body = `Moved Permanently: ${location}\n`
  const head = 'HTTP/1.1 301 Moved Permanently\r\n'
    + `Server: ${o.server}\r\n`
    + `Location: ${location}\r\n`
    + 'Content-Type: text/plain; charset=utf-8\r\n'
    + `Content-Length: ${Buffer.byteLength(body)}\r\n`
    + `Fly-Request-Id: ${o.requestId}\r\n`
    + (o.close ? 'Connection: close\r\n' : '')
    + '\r\n'
  return Buffer.from(o.head === true ? head : head + body, 'latin1')
}
