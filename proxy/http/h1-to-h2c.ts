import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import type { EdgeProxyError } from '../../schemas/errors.js'
import type { ClientInfo, ProxyContext } from '../proxy-context.js'
import type { Candidate, PortRoute } from '../routing/service-route.js'
import { encodeChunk, LAST_CHUNK } from './chunked.js'
import { forwardHeaderPairs } from './forward-headers.js'
import { sendUpstream, type H2UpstreamResponse } from './h2-upstream.js'
import { BODY_INVALID, BODY_TOO_LARGE, type RequestBodyFraming } from './request-body.js'
import type { RequestHead } from './request-head.js'

/** What the HTTP/1.1 session learns from a bridged exchange. */
export interface BridgeOwner {
  /** The Machine could not be reached before any response: the session may retry or answer 502. */
  bridgeFailed(err: EdgeProxyError): void
  /** The response (with this status) is complete; close the client connection when `close`. */
  bridgeDone(close: boolean, status: number): void
  /** The response broke off after it started. */
  bridgeBroken(): void
}

const DROP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection'])

/**
 * An HTTP/1.1 client exchange sent to an `h2_backend` Machine over h2c (FLY-SPEC §2): the request body is
 * de-framed into the h2 stream and the response is framed back as HTTP/1.1 (Content-Length when the
 * Machine gave one, chunked otherwise, close-delimited for HTTP/1.0 clients).
 */
export class H1ToH2cBridge {
  private readonly body: PassThrough | undefined
  private started = false

  constructor(
    private readonly owner: BridgeOwner,
    private readonly client: Socket,
    private readonly req: RequestHead,
    /** The session's body framing: it knows where the body ends, this side decodes it. */
    private readonly framing: RequestBodyFraming,
    private readonly reqId: string,
    private readonly info: ClientInfo,
    private readonly route: PortRoute,
    private readonly deps: ProxyContext,
  ) {
    this.body = framing.done ? undefined : new PassThrough()
  }

  send(cand: Candidate, preferredUnavailable: string | undefined): void {
    const req = this.req
    const headers: Array<[string, string]> = []
    for (const line of req.lines.split('\r\n')) {
      if (line === '') continue
      const colon = line.indexOf(':')
      const name = line.slice(0, colon).toLowerCase()
      if (!DROP.has(name)) headers.push([name, line.slice(colon + 1).trim()])
    }
    headers.push(['host', req.hostHeader === '' ? `${this.route.service.app}.${this.deps.index.domain}` : req.hostHeader])
    for (const pair of forwardHeaderPairs(this.info, this.deps.region, '1.1', req.forwardedFor, this.route.publicPort, this.reqId)) {
      if (pair[0] === 'x-forwarded-port' && req.hasForwardedPort) continue
      headers.push(pair)
    }
    if (preferredUnavailable !== undefined) headers.push(['fly-preferred-instance-unavailable', preferredUnavailable])
    sendUpstream({
      machine: cand.machine, port: this.route.service.config.internal_port, h2: true, method: req.method, path: req.target, headers, body: this.body,
    }, this.deps, (err, res) => {
      if (err !== undefined) { this.owner.bridgeFailed(err); return }
      this.respond(res!)
    })
  }

  /** Client bytes while the request body is open; returns how many belong to the body. */
  onClientBody(chunk: Buffer): number {
    const body = this.body!
    const n = this.framing.consume(chunk, (b, s, e) => { body.write(b.subarray(s, e)) })
    if (n === BODY_INVALID) { body.destroy(new Error('invalid chunked request body')); return chunk.length }
    if (n === BODY_TOO_LARGE) { body.destroy(new Error('request body over the limit')); return chunk.length }
    if (this.framing.done) body.end()
    return n
  }

  private respond(res: H2UpstreamResponse): void {
    const req = this.req
    const edits = this.route.edits
    let head = `HTTP/1.1 ${res.status} ${statusText(res.status)}\r\n`
    let length: string | undefined
    for (const [name, value] of res.headers) {
      if (DROP.has(name) || name.startsWith('fly-replay') || edits.drop.has(name)) continue
      if (!edits.pristine && (name === 'server' || name === 'fly-request-id')) continue
      if (name === 'content-length') length = value
      head += `${name}: ${value}\r\n`
    }
    const noBody = req.method === 'HEAD' || res.status === 204 || res.status === 304
    const chunked = !noBody && length === undefined && req.minor === 1
    const close = !req.keepAlive || (!noBody && length === undefined && req.minor === 0) || !this.framing.done
    if (chunked) head += 'Transfer-Encoding: chunked\r\n'
    if (!edits.pristine) head += `Server: ${this.deps.serverHeader}\r\nVia: 1.1 fly.io\r\nFly-Request-Id: ${this.reqId}\r\n`
    head += edits.addLines
    if (close) head += 'Connection: close\r\n'
    this.client.write(`${head}\r\n`, 'latin1')
    this.started = true
    if (noBody) { res.body.resume(); this.owner.bridgeDone(close, res.status); return }
    res.body.on('data', (chunk: Buffer) => {
      if (!this.client.write(chunked ? encodeChunk(chunk) : chunk)) {
        res.body.pause()
        this.client.once('drain', () => res.body.resume())
      }
    })
    res.body.once('end', () => {
      if (chunked) this.client.write(LAST_CHUNK)
      this.owner.bridgeDone(close, res.status)
    })
    res.body.once('error', () => this.owner.bridgeBroken())
  }

  get responseStarted(): boolean { return this.started }

  abort(): void { this.body?.destroy() }
}

function statusText(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown'
}
