import { BODY_CHUNKED, type RequestHead } from './request-head.js'
import type { ResponseEdits } from './response-edits.js'
import type { ResponseHead } from './response-head.js'

/** How a response's body goes to the client, decided once from both heads. */
export interface ClientFraming {
  /** Chunked from the Machine but the client speaks HTTP/1.0: send the payload, close to delimit it. */
  dechunk: boolean
  /** The client connection closes after this response. */
  close: boolean
}

export interface ResponseHeadOptions {
  requestId: string
  serverHeader: string
  edits: ResponseEdits
  /** `Via` version of the client side: `1.1` or `2`. */
  via: string
}

/**
 * The head the client receives (FLY-SPEC §7 response headers): the Machine's status and headers with
 * hop-by-hop ones gone, then Server, Via and Fly-Request-Id unless `pristine`, then the configured
 * `response.headers` edits, then the connection header this side needs.
 */
export function clientResponseHead(req: RequestHead, res: ResponseHead, framing: ClientFraming, o: ResponseHeadOptions): string {
  let head = res.statusLine.charCodeAt(7) === 0x31 ? res.statusLine : `HTTP/1.1${res.statusLine.slice(8)}`
  head += '\r\n'
  head += res.lines
  if (res.bodyKind === BODY_CHUNKED && !framing.dechunk) head += 'Transfer-Encoding: chunked\r\n'
  if (!o.edits.pristine) head += `Server: ${o.serverHeader}\r\nVia: ${o.via} fly.io\r\nFly-Request-Id: ${o.requestId}\r\n`
  head += o.edits.addLines
  if (framing.close) head += 'Connection: close\r\n'
  else if (req.minor === 0) head += 'Connection: keep-alive\r\n'
  return head + '\r\n'
}

/** A 1xx head (100 Continue, 103 Early Hints) passed on as the Machine sent it, minus hop-by-hop lines. */
export function informationalHead(res: ResponseHead): string {
  return `${res.statusLine}\r\n${res.lines}\r\n`
}
