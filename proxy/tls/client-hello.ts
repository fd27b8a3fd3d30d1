/**
 * The server name a TLS client asks for, read from its ClientHello before any TLS object exists
 * (handlers/tls-front.ts picks the certificate from it, so the handshake's context holds that one
 * certificate and no other). RFC 8446 §5.1 (records), §4.1.2 and RFC 5246 §7.4.1.2 (ClientHello),
 * RFC 6066 §3 (server_name). Strict: a ClientHello OpenSSL would refuse for its framing is refused here
 * too, early, with a reason, and a server name must be printable ASCII (a DNS name's A-labels are).
 * Runs once per TLS connection: no copies unless the hello spans several records.
 */

/** What the first bytes of a connection say so far. */
export type HelloScan =
  /** More bytes are needed: nothing new can be said before `need` bytes in all (a reader waits for them). */
  | { readonly kind: 'partial'; readonly need: number }
  | { readonly kind: 'hello'; readonly servername: string | undefined }
  | { readonly kind: 'invalid'; readonly reason: string }

/** Bytes read before giving up on a ClientHello: one full record and its header. */
export const MAX_HELLO_BYTES = 16 * 1024 + 5

const RECORD_HEADER = 5
const MAX_RECORD = 16 * 1024
const CONTENT_HANDSHAKE = 0x16
const HANDSHAKE_CLIENT_HELLO = 1
const HANDSHAKE_HEADER = 4
const EXT_SERVER_NAME = 0
const NAME_TYPE_HOST = 0
const MAX_HOST_NAME = 255

const NO_NAME: HelloScan = Object.freeze({ kind: 'hello', servername: undefined })

const invalid = (reason: string): HelloScan => ({ kind: 'invalid', reason })
const partial = (buf: Buffer, need: number): HelloScan =>
  buf.length >= MAX_HELLO_BYTES ? invalid('no complete ClientHello in the first 16 KiB') : { kind: 'partial', need: Math.min(need, MAX_HELLO_BYTES) }
const u16 = (b: Buffer, at: number): number => (b[at] << 8) | b[at + 1]
const u24 = (b: Buffer, at: number): number => (b[at] << 16) | (b[at + 1] << 8) | b[at + 2]

/**
 * Scans `buf`, the first bytes the client sent: 'partial' until the whole ClientHello is there, then its
 * server_name (undefined when it sent none), or 'invalid'. Never throws; call it again with more bytes.
 */
export function scanClientHello(buf: Buffer): HelloScan {
  if (buf.length === 0) return partial(buf, RECORD_HEADER)
  if (buf[0] !== CONTENT_HANDSHAKE) {
    return invalid((buf[0] & 0x80) !== 0 ? 'an SSLv2-style ClientHello is not supported' : 'not a TLS handshake record')
  }
  // the first record alone: the common case, parsed in place
  const headerError = recordHeaderError(buf, 0)
  if (headerError !== undefined) return invalid(headerError)
  if (buf.length < RECORD_HEADER) return partial(buf, RECORD_HEADER)
  const recordLen = u16(buf, 3)
  const fragment = Math.min(recordLen, buf.length - RECORD_HEADER)
  if (fragment >= 1 && buf[RECORD_HEADER] !== HANDSHAKE_CLIENT_HELLO) return invalid('the first handshake message is not a ClientHello')
  if (fragment >= HANDSHAKE_HEADER) {
    const bodyLen = u24(buf, RECORD_HEADER + 1)
    if (HANDSHAKE_HEADER + bodyLen > MAX_RECORD) return invalid('ClientHello longer than 16 KiB')
    const start = RECORD_HEADER + HANDSHAKE_HEADER
    if (HANDSHAKE_HEADER + bodyLen <= recordLen) {
      return fragment >= HANDSHAKE_HEADER + bodyLen ? parseHello(buf, start, start + bodyLen) : partial(buf, start + bodyLen)
    }
  }
  return spanningRecords(buf)
}

/** A ClientHello fragmented over several records (legal, rare): its fragments are joined into one copy. */
function spanningRecords(buf: Buffer): HelloScan {
  const fragments: number[] = [] // [from, to) pairs of handshake bytes in buf
  const byteAt = (i: number): number => {
    for (let f = 0; f < fragments.length; f += 2) {
      const len = fragments[f + 1] - fragments[f]
      if (i < len) return buf[fragments[f] + i]
      i -= len
    }
    return 0
  }
  let at = 0
  let total = 0
  let need = -1
  // walk whole records until the message is complete; what follows it (early data…) is not ours to judge
  while (need === -1 || total < need) {
    const headerError = recordHeaderError(buf, at)
    if (headerError !== undefined) return invalid(headerError)
    if (at + RECORD_HEADER > buf.length) return partial(buf, at + RECORD_HEADER)
    const len = u16(buf, at + 3)
    if (at + RECORD_HEADER + len > buf.length) return partial(buf, at + RECORD_HEADER + len)
    fragments.push(at + RECORD_HEADER, at + RECORD_HEADER + len)
    total += len
    at += RECORD_HEADER + len
    if (need === -1 && total >= HANDSHAKE_HEADER) {
      need = HANDSHAKE_HEADER + ((byteAt(1) << 16) | (byteAt(2) << 8) | byteAt(3))
      if (need > MAX_RECORD) return invalid('ClientHello longer than 16 KiB')
    }
  }
  const message = Buffer.allocUnsafe(need)
  let filled = 0
  for (let f = 0; f < fragments.length && filled < need; f += 2) {
    filled += buf.copy(message, filled, fragments[f], Math.min(fragments[f + 1], fragments[f] + need - filled))
  }
  return parseHello(message, HANDSHAKE_HEADER, need)
}

/** The reason the record header at `at` (possibly cut short) cannot start or continue a ClientHello. */
function recordHeaderError(buf: Buffer, at: number): string | undefined {
  const have = buf.length - at
  if (have >= 1 && buf[at] !== CONTENT_HANDSHAKE) return 'a record that is not a handshake record interrupts the ClientHello'
  if (have >= 2 && buf[at + 1] !== 3) return 'not a TLS record (bad record version)'
  if (have >= RECORD_HEADER) {
    const len = u16(buf, at + 3)
    if (len === 0) return 'an empty handshake record'
    if (len > MAX_RECORD) return 'a record longer than 16 KiB'
  }
  return undefined
}

/** The ClientHello body in buf[start, end): versions, random, session id, suites, compression, extensions. */
function parseHello(buf: Buffer, start: number, end: number): HelloScan {
  let p = start
  if (end - p < 2 + 32 + 1) return invalid('ClientHello too short')
  if (buf[p] !== 3) return invalid('ClientHello version is not TLS')
  p += 2 + 32
  const sessionIdLen = buf[p++]
  if (sessionIdLen > 32) return invalid('ClientHello session id longer than 32 bytes')
  p += sessionIdLen
  if (p + 2 > end) return invalid('ClientHello truncated before its cipher suites')
  const suitesLen = u16(buf, p)
  p += 2
  if (suitesLen < 2 || suitesLen % 2 !== 0) return invalid('ClientHello cipher suites list is malformed')
  p += suitesLen
  if (p + 1 > end) return invalid('ClientHello truncated before its compression methods')
  const compressionLen = buf[p++]
  if (compressionLen < 1) return invalid('ClientHello offers no compression method')
  p += compressionLen
  if (p > end) return invalid('ClientHello compression methods overrun the message')
  if (p === end) return NO_NAME // no extensions at all (TLS 1.2 allows it)
  if (p + 2 > end) return invalid('ClientHello extensions length is truncated')
  const extensionsLen = u16(buf, p)
  p += 2
  if (p + extensionsLen !== end) return invalid('ClientHello extensions length does not match the message')
  let result = NO_NAME
  let sawName = false
  while (p < end) {
    if (p + 4 > end) return invalid('ClientHello extension header is truncated')
    const type = u16(buf, p)
    const len = u16(buf, p + 2)
    p += 4
    if (p + len > end) return invalid('ClientHello extension overruns the message')
    if (type === EXT_SERVER_NAME) {
      if (sawName) return invalid('ClientHello has two server_name extensions')
      sawName = true
      result = serverName(buf, p, p + len)
      if (result.kind === 'invalid') return result
    }
    p += len
  }
  return result
}

/** RFC 6066 §3: a ServerNameList holding exactly one host_name of 1–255 printable ASCII bytes. */
function serverName(buf: Buffer, start: number, end: number): HelloScan {
  if (end - start < 2 || u16(buf, start) !== end - start - 2) return invalid('server_name list length is malformed')
  let p = start + 2
  if (p + 3 > end) return invalid('server_name list is empty or truncated')
  if (buf[p] !== NAME_TYPE_HOST) return invalid('server_name entry is not a host_name')
  const nameLen = u16(buf, p + 1)
  p += 3
  if (p + nameLen !== end) return invalid('server_name host_name length does not match the list')
  if (nameLen === 0 || nameLen > MAX_HOST_NAME) return invalid('server_name host_name is empty or longer than 255 bytes')
  for (let i = p; i < end; i++) {
    if (buf[i] < 0x21 || buf[i] > 0x7e) return invalid('server_name host_name has a byte that is not printable ASCII')
  }
  return { kind: 'hello', servername: buf.toString('latin1', p, end) }
}
