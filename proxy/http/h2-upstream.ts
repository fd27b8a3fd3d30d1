import { connect as h2connect, type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2'
import { PassThrough, type Readable } from 'node:stream'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { ProxyContext } from '../proxy-context.js'
import type { RoutableMachine } from '../routing/routable-machine.js'
import { CHUNKED_ERROR, ChunkedScanner, encodeChunk, LAST_CHUNK } from './chunked.js'
import { findHeadEnd, HEAD_BARE_LF, HEAD_INCOMPLETE, BODY_CHUNKED, BODY_LENGTH, BODY_NONE } from './request-head.js'
import { BODY_UNTIL_CLOSE, parseResponseHead, type ResponseHead } from './response-head.js'
import { NO_EDITS } from './response-edits.js'
import { UpstreamConn, type UpstreamOwner } from './upstream-conn.js'

/** A request built from an HTTP/2 stream, for the Machine. Header names are lower-case. */
export interface H2UpstreamRequest {
  machine: RoutableMachine
  port: number
  /** `h2_backend`: h2c with prior knowledge instead of HTTP/1.1. */
  h2: boolean
  method: string
  path: string
  headers: Array<[string, string]>
  /** undefined when the client sent no body. */
  body: Readable | undefined
}

export interface H2UpstreamResponse {
  status: number
  /** Lower-case names, in order, hop-by-hop included (the caller filters). */
  headers: Array<[string, string]>
  body: Readable
  /** h2c only: the Machine's trailers, known once `body` ended (undefined when it sent none). */
  trailers?: () => Record<string, string | string[]> | undefined
  /** HTTP/1.1 Machines: the response asks for a replay (`fly-replay` value / JSON form, FLY-SPEC §6). */
  replay?: string
  replayJson?: boolean
}

type Done = (err: EdgeProxyError | undefined, res: H2UpstreamResponse | undefined) => void

/** Sends one request to the Machine; `done` gets the response head with a body stream, or a connect error. */
export function sendUpstream(req: H2UpstreamRequest, deps: ProxyContext, done: Done): void {
  if (req.h2) { sendH2c(req, deps, done); return }
  const host = req.machine.id // pooled by Machine id: Machines of different nodes may share a private address
  const pooled = req.machine.privateAddr === undefined ? undefined : deps.pool.take(host, req.port)
  if (pooled !== undefined) {
    deps.stats.upstreamReused++
    new H1Exchange(pooled, req, deps, done).start()
    return
  }
  deps.stats.upstreamConnects++
  deps.connector.connect(req.machine, req.port, (err, socket) => {
    if (err !== undefined || socket === undefined) { done(err ?? new EdgeProxyError('EP_MACHINE_UNREACHABLE', 'connect failed'), undefined); return }
    new H1Exchange(new UpstreamConn(socket, host, req.port, deps.pool), req, deps, done).start()
  })
}

/** HTTP/1.1 to the Machine over a pooled connection, for a request that did not arrive as HTTP/1.1. */
class H1Exchange implements UpstreamOwner {
  private resBuf: Buffer | undefined
  private res: ResponseHead | undefined
  private readonly chunks = new ChunkedScanner()
  private left = 0
  private body: PassThrough | undefined
  private reqDone: boolean
  private reusable = true
  private answered = false

  constructor(private readonly conn: UpstreamConn, private readonly req: H2UpstreamRequest, private readonly deps: ProxyContext, private readonly done: Done) {
    this.reqDone = req.body === undefined
  }

  start(): void {
    this.conn.owner = this
    const req = this.req
    const length = req.headers.find(([n]) => n === 'content-length')?.[1]
    const chunked = req.body !== undefined && length === undefined
    let head = `${req.method} ${req.path} HTTP/1.1\r\n`
    for (const [n, v] of req.headers) head += `${n}: ${v}\r\n`
    if (chunked) head += 'transfer-encoding: chunked\r\n'
    this.conn.socket.write(`${head}\r\n`, 'latin1')
    const body = req.body
    if (body === undefined) return
    body.on('data', (chunk: Buffer) => {
      if (!this.conn.socket.write(chunked ? encodeChunk(chunk) : chunk)) body.pause()
    })
    body.once('end', () => {
      if (chunked) this.conn.socket.write(LAST_CHUNK)
      this.reqDone = true
    })
    body.once('error', () => this.conn.discard())
  }

  onUpstreamDrain(): void { this.req.body?.resume() }

  onUpstreamData(chunk: Buffer): void {
    if (this.res === undefined) {
      const buf = this.resBuf === undefined ? chunk : Buffer.concat([this.resBuf, chunk])
      const end = findHeadEnd(buf, 0)
      if (end === HEAD_INCOMPLETE) { this.resBuf = buf; return }
      if (end === HEAD_BARE_LF) { this.failHead('bare LF in the response head'); return }
      const res = parseResponseHead(buf, 0, end, this.req.method === 'HEAD', NO_EDITS)
      if (res instanceof EdgeProxyError) { this.failHead(res.message); return }
      this.resBuf = undefined
      if (res.status < 200) { // 1xx: h2 clients get only the final response here
        if (end < buf.length) this.onUpstreamData(buf.subarray(end))
        return
      }
      this.res = res
      this.reusable = res.keepAlive
      this.left = res.contentLength
      this.body = new PassThrough()
      this.body.on('drain', () => this.conn.socket.resume())
      this.answered = true
      this.done(undefined, { status: res.status, headers: headerPairs(res.lines), body: this.body, replay: res.replay, replayJson: res.replayJson })
      if (res.bodyKind === BODY_NONE) { this.complete(); return }
      if (end < buf.length) this.onBody(buf.subarray(end))
      return
    }
    this.onBody(chunk)
  }

  private onBody(chunk: Buffer): void {
    const res = this.res!
    const body = this.body!
    let ok = true
    if (res.bodyKind === BODY_LENGTH) {
      const n = Math.min(this.left, chunk.length)
      this.left -= n
      ok = body.write(n === chunk.length ? chunk : chunk.subarray(0, n))
      if (n < chunk.length) this.reusable = false
      if (this.left === 0) { this.complete(); return }
    } else if (res.bodyKind === BODY_CHUNKED) {
      const parts: Buffer[] = []
      const r = this.chunks.scan(chunk, 0, chunk.length, (b, s, e) => { parts.push(b.subarray(s, e)) })
      if (r === CHUNKED_ERROR) { body.destroy(new Error('invalid chunked encoding from the Machine')); this.conn.discard(); return }
      for (const p of parts) ok = body.write(p) && ok
      if (r >= 0) { if (r < chunk.length) this.reusable = false; this.complete(); return }
    } else {
      ok = body.write(chunk)
    }
    if (!ok) this.conn.socket.pause()
  }

  private complete(): void {
    this.body?.end()
    const conn = this.conn
    conn.owner = undefined
    conn.responses++
    if (this.reusable && this.reqDone && conn.alive && this.deps.pool.put(conn, this.deps.clock.now)) return
    conn.discard()
  }

  onUpstreamEnd(conn: UpstreamConn): void {
    if (this.res?.bodyKind === BODY_UNTIL_CLOSE) { this.reusable = false; this.complete(); return }
    conn.socket.destroy()
  }

  onUpstreamClose(_conn: UpstreamConn, err: Error | undefined): void {
    if (!this.answered) {
      this.answered = true
      this.done(err instanceof EdgeProxyError ? err : new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${this.req.machine.id} closed the connection before responding`, { cause: err }), undefined)
      return
    }
    if (this.body !== undefined && !this.body.writableEnded) this.body.destroy(new Error('the Machine closed the connection during the response'))
  }

  private failHead(message: string): void {
    this.conn.discard()
    if (this.answered) return
    this.answered = true
    this.done(new EdgeProxyError('EP_BAD_GATEWAY_RESPONSE', `the Machine sent an invalid response: ${message}`), undefined)
  }
}

/** `Name: value\r\n` lines as lower-case pairs. */
function headerPairs(lines: string): Array<[string, string]> {
  const out: Array<[string, string]> = []
  let i = 0
  while (i < lines.length) {
    const e = lines.indexOf('\r\n', i)
    const colon = lines.indexOf(':', i)
    out.push([lines.slice(i, colon).toLowerCase(), lines.slice(colon + 1, e).trim()])
    i = e + 2
  }
  return out
}

// ---- h2c (h2_backend) ----

const h2Sessions = new WeakMap<ProxyContext, Map<string, ClientHttp2Session>>()

/** h2c with prior knowledge, one multiplexed session per Machine port (FLY-SPEC §2 h2_backend, for gRPC). */
function sendH2c(req: H2UpstreamRequest, deps: ProxyContext, done: Done): void {
  let sessions = h2Sessions.get(deps)
  if (sessions === undefined) { sessions = new Map(); h2Sessions.set(deps, sessions) }
  const key = `${req.machine.id}:${req.port}`
  const existing = sessions.get(key)
  if (existing !== undefined && !existing.closed && !existing.destroyed) { h2Request(existing, req, done); return }
  deps.stats.upstreamConnects++
  deps.connector.connect(req.machine, req.port, (err, socket) => {
    if (err !== undefined || socket === undefined) { done(err ?? new EdgeProxyError('EP_MACHINE_UNREACHABLE', 'connect failed'), undefined); return }
    const session = h2connect(`http://${key}`, { createConnection: () => socket })
    session.on('error', (e) => deps.log.debug({ err: e, machine: req.machine.id }, 'h2c session to the Machine failed'))
    const tracked = { sweep() { /* idle streams end with the session */ }, drain() { session.close() }, destroy() { session.destroy() } }
    session.on('close', () => {
      if (sessions!.get(key) === session) sessions!.delete(key)
      deps.sessions.delete(tracked)
    })
    session.on('goaway', () => { if (sessions!.get(key) === session) sessions!.delete(key) })
    sessions!.set(key, session)
    deps.sessions.add(tracked)
    h2Request(session, req, done)
  })
}

function h2Request(session: ClientHttp2Session, req: H2UpstreamRequest, done: Done): void {
  const headers: OutgoingHttpHeaders = { ':method': req.method, ':path': req.path, ':scheme': 'http' }
  for (const [n, v] of req.headers) {
    if (n === 'host') { headers[':authority'] = v; continue }
    const prev = headers[n]
    headers[n] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v]
  }
  const stream = session.request(headers, { endStream: req.body === undefined })
  let answered = false
  stream.once('response', (h) => {
    answered = true
    const pairs: Array<[string, string]> = []
    for (const name in h) {
      if (name.charCodeAt(0) === 0x3a) continue
      const v = h[name]
      if (Array.isArray(v)) for (const one of v) pairs.push([name, one])
      else if (v !== undefined) pairs.push([name, String(v)])
    }
    done(undefined, { status: Number(h[':status']), headers: pairs, body: stream, trailers: () => trailers })
  })
  let trailers: Record<string, string | string[]> | undefined
  stream.once('trailers', (t) => {
    trailers = {}
    for (const name in t) {
      const v = t[name]
      if (v !== undefined && name.charCodeAt(0) !== 0x3a) trailers[name] = Array.isArray(v) ? v : String(v)
    }
  })
  stream.once('error', (err) => {
    if (answered) return
    answered = true
    done(new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${req.machine.id} failed the h2c request: ${err.message}`, { cause: err }), undefined)
  })
  if (req.body !== undefined) {
    req.body.pipe(stream)
    // a body that fails (the client's stream reset, a body over the limit) must not leave the Machine waiting
    req.body.once('error', () => stream.close(0x8 /* CANCEL */))
  }
}
