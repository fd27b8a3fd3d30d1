import { EdgeProxyError } from '../../schemas/errors.js'
import { BODY_CHUNKED, BODY_LENGTH, BODY_NONE } from './request-head.js'
import type { ResponseEdits } from './response-edits.js'
import { equalsLower, isToken } from './token-table.js'

/** The body runs until the Machine closes the connection (no Content-Length, no chunked). */
export const BODY_UNTIL_CLOSE = 3

/** A Machine's response head, with the lines the client will see. */
export interface ResponseHead {
  status: number
  /** `HTTP/1.1 200 OK`, without CRLF. */
  statusLine: string
  /** Header lines to pass on, CRLF-terminated: hop-by-hop, framing and proxy-owned names removed. */
  lines: string
  bodyKind: number
  contentLength: number
  /** The Machine keeps the connection open after this response. */
  keepAlive: boolean
  /** `fly-replay` value, for the replay issue: such a response must not reach the client. */
  replay: string | undefined
  /** Content-Type is application/vnd.fly.replay+json: the body is a replay directive (FLY-SPEC §6). */
  replayJson: boolean
  headBytes: number
}

function badGateway(message: string): EdgeProxyError {
  return new EdgeProxyError('EP_BAD_GATEWAY_RESPONSE', `the Machine sent an invalid response: ${message}`)
}

/**
 * Parses buf[start, end) (end from findHeadEnd). `noBody`: the request was HEAD, so no body follows
 * whatever the headers say.
 */
export function parseResponseHead(buf: Buffer, start: number, end: number, noBody: boolean, edits: ResponseEdits): ResponseHead | EdgeProxyError {
  const head = buf.toString('latin1', start, end - 2)
  const lineEnd = head.indexOf('\r')
  if (head.charCodeAt(lineEnd + 1) !== 10) return badGateway('bare CR in the status line')
  if (!head.startsWith('HTTP/1.') || head.charCodeAt(8) !== 0x20) return badGateway('malformed status line')
  const minor = head.charCodeAt(7) - 0x30
  const status = Number(head.slice(9, 12))
  if (!(status >= 100 && status <= 999) || (lineEnd > 12 && head.charCodeAt(12) !== 0x20)) return badGateway('malformed status code')
  const statusLine = head.slice(0, lineEnd)

  let contentLength = -1
  let chunked = false
  let otherCoding = false
  let connection: string | undefined
  let replay: string | undefined
  let replayJson = false
  const filterNames = edits.drop.size > 0
  const pristine = edits.pristine

  let out = ''
  let runStart = lineEnd + 2
  let i = runStart
  while (i < head.length) {
    const e = head.indexOf('\r', i)
    if (head.charCodeAt(e + 1) !== 10) return badGateway('bare CR in a header line')
    const colon = head.indexOf(':', i)
    if (colon === -1 || colon > e || !isToken(head, i, colon)) return badGateway('malformed header line')
    const n = colon - i
    let drop = false
    switch (n) {
      case 6:
        drop = !pristine && equalsLower(head, i, 'server')
        break
      case 10:
        if (equalsLower(head, i, 'connection')) {
          const v = head.slice(colon + 1, e)
          connection = connection === undefined ? v : `${connection},${v}`
          drop = true
        } else if (equalsLower(head, i, 'keep-alive')) drop = true
        break
      case 12: {
        // the value's 13th character ('v' of application/vnd…) first: one compare rejects most responses
        let v = colon + 1
        while (head.charCodeAt(v) === 0x20 || head.charCodeAt(v) === 0x09) v++
        if ((head.charCodeAt(v + 12) | 0x20) === 0x76 && equalsLower(head, i, 'content-type') && isReplayJson(head, v, e)) replayJson = true
        break
      }
      case 14:
        if (equalsLower(head, i, 'content-length')) {
          const v = head.slice(colon + 1, e).trim()
          if (!/^\d{1,15}$/.test(v)) return badGateway(`invalid Content-Length "${v}"`)
          const len = Number(v)
          if (contentLength !== -1 && contentLength !== len) return badGateway('conflicting Content-Length headers')
          if (contentLength !== -1) drop = true // identical duplicate: keep one line
          contentLength = len
        } else if (!pristine && equalsLower(head, i, 'fly-request-id')) drop = true
        break
      case 16:
        drop = equalsLower(head, i, 'proxy-connection')
        break
      case 17:
        if (equalsLower(head, i, 'transfer-encoding')) {
          const codings = head.slice(colon + 1, e).toLowerCase().split(',').map((s) => s.trim())
          if (codings[codings.length - 1] === 'chunked') chunked = true
          else otherCoding = true
          drop = true // re-added by the session when it forwards chunked bytes
        }
        break
      default:
        break
    }
    if (n >= 10 && (head.charCodeAt(i) | 0x20) === 0x66 && equalsLower(head, i, 'fly-replay')) {
      drop = true // never reaches the client (FLY-SPEC §7)
      if (n === 10) replay = head.slice(colon + 1, e).trim()
    }
    if (!drop && filterNames && edits.drop.has(head.slice(i, colon).toLowerCase())) drop = true
    if (drop) {
      if (i > runStart) out += head.slice(runStart, i)
      runStart = e + 2
    }
    i = e + 2
  }
  if (runStart < head.length) out = out === '' && runStart === lineEnd + 2 ? head.slice(runStart) : out + head.slice(runStart)

  let keepAlive = minor >= 1
  if (connection !== undefined) {
    const named: string[] = []
    for (const raw of connection.toLowerCase().split(',')) {
      const t = raw.trim()
      if (t === 'close') keepAlive = false
      else if (t === 'keep-alive') keepAlive = true
      else if (t !== '' && t !== 'upgrade') named.push(t)
    }
    if (named.length > 0) out = out.split('\r\n').filter((l) => l !== '' && !named.includes(l.slice(0, l.indexOf(':')).toLowerCase())).map((l) => `${l}\r\n`).join('')
  }

  let bodyKind: number
  if (noBody || status < 200 || status === 204 || status === 304) bodyKind = BODY_NONE
  else if (chunked) bodyKind = BODY_CHUNKED
  else if (otherCoding) bodyKind = BODY_UNTIL_CLOSE
  else if (contentLength >= 0) bodyKind = contentLength === 0 ? BODY_NONE : BODY_LENGTH
  else bodyKind = BODY_UNTIL_CLOSE
  // both framings at once: chunked wins (RFC 9112 §6.3) but the connection is not trusted again
  if ((chunked || otherCoding) && contentLength !== -1) {
    keepAlive = false
    out = out.split('\r\n').filter((l) => l !== '' && !/^content-length\s*:/i.test(l)).map((l) => `${l}\r\n`).join('')
  }
  if (bodyKind === BODY_UNTIL_CLOSE) keepAlive = false

  return { status, statusLine, lines: out, bodyKind, contentLength: contentLength < 0 ? 0 : contentLength, keepAlive, replay, replayJson, headBytes: end - start }
}

const REPLAY_JSON = 'application/vnd.fly.replay+json'

/** head[i, end) (leading whitespace skipped) is a Content-Type value naming the fly-replay JSON form (parameters allowed). */
function isReplayJson(head: string, i: number, end: number): boolean {
  if (end - i < REPLAY_JSON.length || !equalsLower(head, i, REPLAY_JSON)) return false
  const next = i + REPLAY_JSON.length
  const c = next < end ? head.charCodeAt(next) : 0x3b
  return c === 0x3b /* ; */ || c === 0x20 || c === 0x09
}
