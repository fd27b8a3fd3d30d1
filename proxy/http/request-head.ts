import { EdgeProxyError } from '../../schemas/errors.js'
import type { RoutingHints } from '../routing/balancer.js'
import { readRoutingHint } from '../routing/routing-hints.js'
import type { HttpLimits } from './limits.js'
import { equalsLower, isToken } from './token-table.js'

export const BODY_NONE = 0
export const BODY_LENGTH = 1
export const BODY_CHUNKED = 2

/**
 * A client request head, parsed by hand from one latin1 string (shared/PERF-NOTES.md): only the header
 * names the proxy acts on are examined; every other line is carried over as a slice, in order.
 */
export interface RequestHead {
  method: string
  /** origin-form (or `*`); an absolute-form target is reduced to its path. */
  target: string
  /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor: number
  /** Lower-case host without port ('' when absent). */
  host: string
  /** The Host value as sent (with port), for redirects. */
  hostHeader: string
  bodyKind: number
  contentLength: number
  /** The client wants the connection kept open after this exchange. */
  keepAlive: boolean
  /** Upgrade protocol when Connection names `upgrade` (WebSocket). */
  upgrade: string | undefined
  expectContinue: boolean
  /** Client's X-Forwarded-For chain (all lines joined), to which the proxy appends. */
  forwardedFor: string | undefined
  /** The client sent X-Forwarded-Port (FLY-SPEC §7: it may pass through). */
  hasForwardedPort: boolean
  hints: RoutingHints | undefined
  /** Header lines to forward, each ending in CRLF, hop-by-hop and proxy-owned names removed. */
  lines: string
  /** Bytes of the head in the buffer, final CRLFCRLF included. */
  headBytes: number
}

const CR = 13
const LF = 10
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/
export const HEAD_INCOMPLETE = -1
export const HEAD_BARE_LF = -2

/**
 * Where the head ends in buf (index past the blank line), scanning LFs from `from`. Every LF must follow a
 * CR: a bare LF is rejected (RFC 9112 §2.2 allows leniency, but two parsers disagreeing is smuggling).
 */
export function findHeadEnd(buf: Buffer, from: number): number {
  let i = buf.indexOf(LF, from)
  while (i !== -1) {
    if (i === 0 || buf[i - 1] !== CR) return HEAD_BARE_LF
    if (i >= 3 && buf[i - 2] === LF) return i + 1
    i = buf.indexOf(LF, i + 1)
  }
  return HEAD_INCOMPLETE
}

/** Leading empty lines before a request line are ignored (RFC 9112 §2.2). */
export function skipLeadingCrlf(buf: Buffer): number {
  let i = 0
  while (i + 1 < buf.length && buf[i] === CR && buf[i + 1] === LF) i += 2
  return i
}

/** Checks an incomplete head against the limits; an error when it can never become a valid head. */
export function checkIncompleteHead(buf: Buffer, start: number, limits: HttpLimits): EdgeProxyError | undefined {
  const len = buf.length - start
  const lineEnd = buf.indexOf(LF, start)
  if (lineEnd === -1 && len > limits.maxUrlBytes + 64) return uriTooLong(limits)
  if (len > limits.maxHeadBytes) return headersTooLarge(limits)
  return undefined
}

function bad(message: string): EdgeProxyError {
  return new EdgeProxyError('EP_BAD_REQUEST', message)
}
function uriTooLong(limits: HttpLimits): EdgeProxyError {
  return new EdgeProxyError('EP_URI_TOO_LONG', `request target longer than ${limits.maxUrlBytes} bytes`)
}
function headersTooLarge(limits: HttpLimits): EdgeProxyError {
  return new EdgeProxyError('EP_HEADERS_TOO_LARGE', `request head larger than ${limits.maxHeadBytes / 1024} KiB`)
}

/** Parses buf[start, end) where end is what findHeadEnd returned. */
export function parseRequestHead(buf: Buffer, start: number, end: number, limits: HttpLimits): RequestHead | EdgeProxyError {
  if (end - start > limits.maxHeadBytes) return headersTooLarge(limits)
  // the head without its final CRLF: every line, the request line included, ends in CRLF
  const head = buf.toString('latin1', start, end - 2)
  // NUL and the other controls (HTAB aside) are not allowed in a field value (RFC 9110 §5.5). JS's trim()
  // treats \v and \f as whitespace, so without this `Transfer-Encoding:\vchunked` would be chunked to us and
  // invalid (or something else) to the Machine: a framing disagreement, i.e. smuggling. CR and LF are
  // checked line by line below.
  if (CONTROL.test(head)) return bad('control character in the request head')

  // request line
  const lineEnd = head.indexOf('\r')
  if (head.charCodeAt(lineEnd + 1) !== LF) return bad('bare CR in the request line')
  const sp1 = head.indexOf(' ')
  if (sp1 <= 0 || sp1 > lineEnd || !isToken(head, 0, sp1)) return bad('malformed request line')
  const sp2 = head.indexOf(' ', sp1 + 1)
  if (sp2 === -1 || sp2 > lineEnd) return bad('malformed request line')
  if (sp2 - sp1 - 1 > limits.maxUrlBytes) return uriTooLong(limits)
  const method = head.slice(0, sp1)
  let target = head.slice(sp1 + 1, sp2)
  if (target.length === 0 || /[\x00-\x20\x7f]/.test(target)) return bad('malformed request target')
  let minor: number
  if (lineEnd - sp2 - 1 === 8 && head.startsWith('HTTP/1.', sp2 + 1)) {
    const d = head.charCodeAt(sp2 + 8)
    if (d === 0x31) minor = 1
    else if (d === 0x30) minor = 0
    else return new EdgeProxyError('EP_HTTP_VERSION', `HTTP/1.${head[sp2 + 8]} is not supported; use HTTP/1.1`)
  } else if (lineEnd - sp2 - 1 === 8 && /^HTTP\/\d\.\d$/.test(head.slice(sp2 + 1, lineEnd))) {
    return new EdgeProxyError('EP_HTTP_VERSION', 'only HTTP/1.0 and HTTP/1.1 are spoken on this port (h2 needs TLS with ALPN)')
  } else {
    return bad('malformed request line')
  }
  if (method === 'CONNECT') return bad('CONNECT is not supported by a reverse proxy')

  let hostHeader: string | undefined
  let contentLength = -1
  let transferEncoding: string | undefined
  let connection: string | undefined
  let upgradeValue: string | undefined
  let expectContinue = false
  let forwardedFor: string | undefined
  let hasForwardedPort = false
  let hints: RoutingHints | undefined

  let out = ''
  let runStart = lineEnd + 2
  let i = runStart
  while (i < head.length) {
    const e = head.indexOf('\r', i)
    if (head.charCodeAt(e + 1) !== LF) return bad('bare CR in a header line')
    const c0 = head.charCodeAt(i)
    if (c0 === 0x20 || c0 === 0x09) return bad('obsolete line folding in the headers')
    const colon = head.indexOf(':', i)
    if (colon === -1 || colon > e) return bad('header line without a colon')
    if (!isToken(head, i, colon)) return bad(`invalid header name "${head.slice(i, colon).trim() || head.slice(i, colon)}"`)
    const n = colon - i
    let drop = false
    switch (n) {
      case 2: // te
        drop = equalsLower(head, i, 'te')
        break
      case 4:
        if (equalsLower(head, i, 'host')) {
          if (hostHeader !== undefined) return bad('more than one Host header')
          hostHeader = head.slice(colon + 1, e).trim()
        }
        break
      case 6:
        if (equalsLower(head, i, 'expect') && head.slice(colon + 1, e).trim().toLowerCase() === '100-continue') expectContinue = true
        break
      case 7:
        if (equalsLower(head, i, 'upgrade')) { upgradeValue = head.slice(colon + 1, e).trim(); drop = true }
        break
      case 10:
        if (equalsLower(head, i, 'connection')) {
          const v = head.slice(colon + 1, e)
          connection = connection === undefined ? v : `${connection},${v}`
          drop = true
        } else if (equalsLower(head, i, 'keep-alive')) drop = true
        break
      case 14:
        if (equalsLower(head, i, 'content-length')) {
          if (contentLength !== -1) return bad('more than one Content-Length header')
          const v = head.slice(colon + 1, e).trim()
          if (!/^\d{1,15}$/.test(v)) return bad(`invalid Content-Length "${v}"`)
          contentLength = Number(v)
        }
        break
      case 15:
        if (equalsLower(head, i, 'x-forwarded-for')) {
          const v = head.slice(colon + 1, e).trim()
          forwardedFor = forwardedFor === undefined ? v : `${forwardedFor}, ${v}`
          drop = true
        } else if (equalsLower(head, i, 'x-forwarded-ssl')) drop = true
        break
      case 16:
        if (equalsLower(head, i, 'x-forwarded-port')) hasForwardedPort = true
        else if (equalsLower(head, i, 'proxy-connection')) drop = true
        break
      case 17:
        if (equalsLower(head, i, 'transfer-encoding')) {
          if (transferEncoding !== undefined) return bad('more than one Transfer-Encoding header')
          transferEncoding = head.slice(colon + 1, e).trim()
        } else if (equalsLower(head, i, 'x-forwarded-proto')) drop = true
        break
      default:
        break
    }
    // client copies of Fly-* headers are never trusted (FLY-SPEC §7); the routing ones are read first
    if (n > 4 && (c0 | 0x20) === 0x66 && equalsLower(head, i, 'fly-')) {
      drop = true
      hints = readRoutingHint(head.slice(i, colon).toLowerCase(), head.slice(colon + 1, e), hints)
    }
    if (drop) {
      if (i > runStart) out += head.slice(runStart, i)
      runStart = e + 2
    }
    i = e + 2
  }
  if (runStart < head.length) out = out === '' && runStart === lineEnd + 2 ? head.slice(runStart) : out + head.slice(runStart)

  // framing (RFC 9112 §6): anything ambiguous is refused rather than interpreted
  let bodyKind = BODY_NONE
  if (transferEncoding !== undefined) {
    if (contentLength !== -1) return bad('both Content-Length and Transfer-Encoding are present')
    if (minor === 0) return bad('Transfer-Encoding is not allowed in HTTP/1.0')
    if (transferEncoding.toLowerCase() !== 'chunked') return bad(`Transfer-Encoding "${transferEncoding}" is not supported; only "chunked"`)
    bodyKind = BODY_CHUNKED
  } else if (contentLength > 0) {
    bodyKind = BODY_LENGTH
  }

  // absolute-form: the authority in the target wins over Host (RFC 9112 §3.2.2)
  if (target.charCodeAt(0) !== 0x2f /* / */ && target !== '*') {
    const m = /^https?:\/\/([^/?#]+)(.*)$/i.exec(target)
    if (m === null) return bad('malformed request target')
    hostHeader = m[1]
    target = m[2] === '' ? '/' : m[2].startsWith('/') ? m[2] : `/${m[2]}`
  }
  if (hostHeader === undefined && minor === 1) return bad('HTTP/1.1 request without a Host header')

  let keepAlive = minor === 1
  let upgrade: string | undefined
  if (connection !== undefined) {
    let sawClose = false
    let sawKeepAlive = false
    const named: string[] = []
    for (const raw of connection.toLowerCase().split(',')) {
      const t = raw.trim()
      if (t === 'close') sawClose = true
      else if (t === 'keep-alive') sawKeepAlive = true
      else if (t === 'upgrade') upgrade = upgradeValue
      else if (t === 'content-length' || t === 'transfer-encoding' || t === 'host') {
        // dropping it as hop-by-hop would send the Machine a body without its framing: request smuggling
        return bad(`Connection must not name ${t}`)
      } else if (t !== '') named.push(t)
    }
    keepAlive = !sawClose && (minor === 1 || sawKeepAlive)
    if (named.length > 0) out = dropNamed(out, named)
  }
  if (upgrade !== undefined && (upgrade === '' || upgrade.toLowerCase() === 'h2c')) upgrade = undefined

  return {
    method,
    target,
    minor,
    host: hostOnly(hostHeader ?? ''),
    hostHeader: hostHeader ?? '',
    bodyKind,
    contentLength: contentLength < 0 ? 0 : contentLength,
    keepAlive,
    upgrade,
    expectContinue,
    forwardedFor,
    hasForwardedPort,
    hints,
    lines: out,
    headBytes: end - start,
  }
}

/** `Example.COM:8080` → `example.com`; `[::1]:80` → `[::1]`. */
export function hostOnly(value: string): string {
  let end = value.length
  if (value.charCodeAt(0) === 0x5b /* [ */) {
    const close = value.indexOf(']')
    end = close === -1 ? end : close + 1
  } else {
    const colon = value.indexOf(':')
    if (colon !== -1) end = colon
  }
  let host = end === value.length ? value : value.slice(0, end)
  if (host.charCodeAt(host.length - 1) === 0x2e) host = host.slice(0, -1) // trailing dot of an FQDN
  return host.toLowerCase()
}

/** Removes header lines whose names the client listed in Connection (hop-by-hop by declaration). */
function dropNamed(lines: string, names: string[]): string {
  return lines
    .split('\r\n')
    .filter((line) => {
      if (line === '') return false
      const name = line.slice(0, line.indexOf(':')).toLowerCase()
      return !names.includes(name)
    })
    .map((line) => `${line}\r\n`)
    .join('')
}

