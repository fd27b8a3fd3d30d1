import { createServer as createH2Server, type Http2Server, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { Readable, Transform } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import { EdgeProxyError } from '../../schemas/errors.js'
import { ERROR_HEADER, errorBody } from '../error-response.js'
import type { ClientInfo, ListenerState, ProxyContext, Session } from '../proxy-context.js'
import { KeptBody } from '../replay/kept-body.js'
import { MAX_DIRECTIVE_BYTES } from '../replay/replay-directive.js'
import { ReplayExchange } from '../replay/replay-exchange.js'
import type { ReplayTarget } from '../replay/replay-plan.js'
import { newRequestId } from '../request-id.js'
import type { RoutingHints } from '../routing/balancer.js'
import { routeForHost } from '../routing/resolve-route.js'
import type { RouteWaiter } from '../routing/router.js'
import type { Candidate, PortRoute } from '../routing/service-route.js'
import { countError } from '../stats.js'
import { readRoutingHint } from '../routing/routing-hints.js'
import { forwardHeaderPairs } from './forward-headers.js'
import { type H2UpstreamRequest, type H2UpstreamResponse, sendUpstream } from './h2-upstream.js'
import { bodyTooLarge } from './limits.js'
import { hostOnly } from './request-head.js'
import type { ResponseEdits } from './response-edits.js'

/**
 * HTTP/2 from clients (ALPN h2 on tls ports, issue 6). node:http2 does the framing; each stream runs
 * route → connect → forward → finish, with HTTP/1.1 to the Machine, or h2c when `h2_backend` is set.
 * Off the HTTP/1.1 hot path, so it uses node's objects and streams.
 */
export function startH2Session(socket: TLSSocket, info: ClientInfo, listener: ListenerState, deps: ProxyContext): void {
  let front = fronts.get(deps)
  if (front === undefined) { front = new H2Front(deps); fronts.set(deps, front) }
  front.accept(socket, info, listener)
}

const fronts = new WeakMap<ProxyContext, H2Front>()

class H2Front {
  private readonly server: Http2Server
  private pending: { info: ClientInfo; listener: ListenerState } | undefined
  private readonly conns = new WeakMap<Http2Session, H2Connection>()

  constructor(private readonly deps: ProxyContext) {
    this.server = createH2Server({
      maxSessionMemory: 32,
      maxHeaderListPairs: 256,
      settings: { maxConcurrentStreams: 256, maxHeaderListSize: deps.limits.maxHeadBytes },
    })
    // 'session' is emitted synchronously inside emit('connection'): `pending` is this socket's
    this.server.on('session', (session: Http2Session) => {
      const p = this.pending!
      this.conns.set(session, new H2Connection(session, p.info, p.listener, this.deps))
    })
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      const conn = this.conns.get(stream.session!)
      if (conn === undefined) { stream.close(); return }
      conn.onStream(stream, headers)
    })
  }

  accept(socket: TLSSocket, info: ClientInfo, listener: ListenerState): void {
    this.pending = { info, listener }
    try {
      this.server.emit('connection', socket)
    } finally {
      this.pending = undefined
    }
  }
}

class H2Connection implements Session {
  active = 0
  private idleSince: number
  /** type=connections: the whole connection counts once, on one Machine per service. */
  readonly sticky = new Map<PortRoute['service'], Candidate>()

  constructor(
    readonly session: Http2Session,
    readonly info: ClientInfo,
    readonly listener: ListenerState,
    readonly deps: ProxyContext,
  ) {
    this.idleSince = deps.clock.now
    deps.sessions.add(this)
    session.on('error', () => { /* 'close' follows */ })
    session.on('close', () => {
      deps.sessions.delete(this)
      for (const cand of this.sticky.values()) deps.router.release(cand.cell)
      this.sticky.clear()
    })
  }

  onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    this.active++
    stream.once('close', () => {
      this.active--
      this.idleSince = this.deps.clock.now
    })
    new H2Exchange(this, stream, headers).run()
  }

  sweep(now: number): void {
    if (this.active === 0 && now - this.idleSince >= this.deps.timeouts.idleMs) this.session.close()
  }

  drain(): void { this.session.close() } // GOAWAY: streams in flight finish, no new ones
  destroy(): void { this.session.destroy() }
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-ssl', 'http2-settings'])

/** One HTTP/2 stream: a request from route to finish. */
class H2Exchange implements RouteWaiter {
  private readonly deps: ProxyContext
  private readonly reqId: string
  private route: PortRoute | undefined
  private cand: Candidate | undefined
  private hints: RoutingHints | undefined
  private leased = false
  private attempts = 0
  private responded = false
  /** performance.now() at the request, the Machine's pick and its response head; the status sent (metrics). */
  private t0 = 0
  private tRouted = 0
  private tHead = 0
  private status = 0
  private bytes = 0
  /** The request body as it streams to the Machine, recorded into `kept` for a fly-replay (proxy/replay/). */
  private recorder: Transform | undefined
  private readonly kept: KeptBody
  private replay: ReplayExchange | undefined
  /** The body went past limits.maxRequestBodyBytes and was refused: nothing else answers this stream. */
  private refused = false

  constructor(private readonly conn: H2Connection, private readonly stream: ServerHttp2Stream, private readonly headers: IncomingHttpHeaders) {
    this.deps = conn.deps
    this.reqId = newRequestId(this.deps.region)
    this.kept = new KeptBody(this.deps.limits.maxReplayBodyBytes)
    stream.on('error', () => { /* reset by the client: 'close' cleans up */ })
    stream.once('close', () => {
      this.release()
      this.replay?.dispose()
      if (this.status !== 0) this.record()
    })
  }

  run(): void {
    const deps = this.deps
    this.t0 = performance.now()
    deps.stats.requests++
    deps.stats.h2Streams++
    const h = this.headers
    if (h[':method'] === 'CONNECT') { this.fail(new EdgeProxyError('EP_BAD_REQUEST', 'CONNECT is not supported by a reverse proxy')); return }
    // refused before routing, as for HTTP/1.1: no Machine is woken or sent anything for it
    if (Number(h['content-length'] ?? 0) > deps.limits.maxRequestBodyBytes) { this.refuseBody(); return }
    const authority = (h[':authority'] ?? h.host ?? '') as string
    const route = routeForHost(deps.index, this.conn.listener, hostOnly(authority), true)
    if (route instanceof EdgeProxyError) { this.fail(route); return }
    this.route = route
    this.hints = hintsOf(h)
    const service = route.service
    if (!service.countsRequests) {
      const sticky = this.conn.sticky.get(service)
      if (sticky !== undefined && this.hints === undefined && deps.balancer.candidates(service).byId.get(sticky.machine.id) === sticky) { this.forward(sticky); return }
      if (sticky !== undefined) { this.conn.sticky.delete(service); deps.router.release(sticky.cell) }
    }
    const picked = deps.router.route(service, this.hints, this)
    if (picked !== undefined) this.routed(picked)
  }

  /** RouteWaiter: names the request in the reason of a Machine started for it. */
  get requestId(): string { return this.reqId }

  routed(result: Candidate | EdgeProxyError): void {
    if (this.stream.destroyed || this.stream.closed) {
      if (!(result instanceof EdgeProxyError)) this.deps.router.release(result.cell)
      return
    }
    if (result instanceof EdgeProxyError) { this.fail(result); return }
    if (this.replay?.pending === true) {
      // a replay holds its lease for this request only, whatever the service's concurrency type
      this.replay.stopTimer()
      this.cand = result
      this.leased = true
      this.forward(result)
      return
    }
    if (this.route!.service.countsRequests) { this.cand = result; this.leased = true }
    else this.conn.sticky.set(this.route!.service, result)
    this.forward(result)
  }

  private forward(cand: Candidate): void {
    if (this.tRouted === 0) this.tRouted = performance.now()
    const route = this.route!
    const h = this.headers
    const prefer = this.hints?.preferInstance
    const headers: Array<[string, string]> = []
    for (const name in h) {
      if (name.charCodeAt(0) === 0x3a /* : */ || HOP_BY_HOP.has(name) || name.startsWith('fly-')) {
        // `te: trailers` is the one TE value HTTP/2 allows, and gRPC servers require it
        if (name === 'te' && h.te === 'trailers' && route.port.http_options?.h2_backend === true) headers.push(['te', 'trailers'])
        continue
      }
      if (name === 'x-forwarded-port') continue
      const v = h[name]
      if (v === undefined) continue
      if (Array.isArray(v)) for (const one of v) headers.push([name, one])
      else headers.push([name, v])
    }
    const forwardedFor = h['x-forwarded-for'] as string | undefined
    headers.push(['host', (h[':authority'] ?? h.host ?? '') as string])
    for (const pair of forwardHeaderPairs(this.conn.info, this.deps.region, '2', forwardedFor, route.publicPort, this.reqId)) headers.push(pair)
    if (h['x-forwarded-port'] !== undefined) headers.splice(headers.findIndex(([n]) => n === 'x-forwarded-port'), 1, ['x-forwarded-port', String(h['x-forwarded-port'])])
    if (prefer !== undefined && prefer !== cand.machine.id) headers.push(['fly-preferred-instance-unavailable', prefer])

    const sent = this.replay?.pending === true ? this.replay.requestPairs(h[':path'] as string, headers) : { path: h[':path'] as string, headers }
    const request: H2UpstreamRequest = {
      machine: cand.machine,
      port: route.service.config.internal_port,
      h2: route.port.http_options?.h2_backend === true,
      method: h[':method'] as string,
      path: sent.path,
      headers: sent.headers,
      body: this.requestBody(),
    }
    sendUpstream(request, this.deps, (err, res) => {
      if (err !== undefined) { this.connectFailed(cand, err, request.body === undefined || this.replay?.pending === true); return }
      this.replay?.reached()
      if (res!.replay !== undefined || res!.replayJson === true) { this.replayResponse(res!, cand); return }
      this.respond(res!, route.edits)
    })
  }

  /** The client's body on its way to the Machine, recorded as it passes; a replay sends the recording. */
  private requestBody(): Readable | undefined {
    if (this.replay?.pending === true) {
      const body = this.kept.take()
      return body === undefined ? undefined : Readable.from([body])
    }
    if (this.stream.endAfterHeaders) return undefined
    if (this.recorder === undefined) {
      const kept = this.kept
      const limit = this.deps.limits.maxRequestBodyBytes
      let bytes = 0
      const onTooLarge = (): void => this.refuseBody()
      this.recorder = this.stream.pipe(new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length
          if (bytes > limit) { onTooLarge(); return }
          kept.add(chunk)
          cb(null, chunk)
        },
      }))
    }
    return this.recorder
  }

  // ---- fly-replay (proxy/replay/) ----

  /** The Machine answered with fly-replay: that answer never reaches the client; the request goes on. */
  private replayResponse(res: H2UpstreamResponse, source: Candidate): void {
    readDirectiveBody(res.body, res.replayJson === true, (body) => {
      if (this.stream.destroyed) return
      this.release()
      const replay = this.replay ??= new ReplayExchange(this.deps.index)
      const target = replay.next({ header: res.replay, json: res.replayJson === true, body }, { machine: source.machine, route: this.route! }, this.kept)
      if (target instanceof EdgeProxyError) { this.fail(target); return }
      this.afterRequestBody(() => {
        if (this.kept.overflow) { this.fail(replay.tooLarge(undefined, this.kept)); return }
        this.replayTo(target)
      })
    })
  }

  /** Runs `then` once the whole client body is recorded (the Machine may have answered before it ended). */
  private afterRequestBody(then: () => void): void {
    const recorder = this.recorder
    if (recorder === undefined || recorder.writableFinished) { then(); return }
    recorder.removeAllListeners('data') // the Machine that answered gets no more of it
    recorder.once('finish', then)
    recorder.resume()
  }

  private replayTo(target: ReplayTarget): void {
    this.route = target.route
    this.hints = target.hints
    this.attempts = 0
    this.replay!.begin(() => this.replayTimedOut())
    const picked = this.deps.router.route(target.route.service, target.hints, this)
    if (picked !== undefined) this.routed(picked)
  }

  /** The replay's `timeout` passed while it waited for a target (the timer stops once one is picked). */
  private replayTimedOut(): void {
    const replay = this.replay
    if (replay === undefined || !replay.pending || this.stream.destroyed) return
    this.deps.router.cancel(this.route!.service, this)
    this.fail(replay.timeoutError())
  }

  /** The Machine refused: a request without a body goes once to another Machine. */
  private connectFailed(cand: Candidate, err: EdgeProxyError, canRetry: boolean): void {
    this.deps.stats.upstreamConnectFailures++
    if (!canRetry || ++this.attempts >= 2 || this.stream.destroyed) { this.fail(err); return }
    this.deps.stats.retries++
    this.release()
    if (!this.route!.service.countsRequests && this.replay?.pending !== true) { this.conn.sticky.delete(this.route!.service); this.deps.router.release(cand.cell) }
    this.hints = { ...this.hints, exclude: new Set([...(this.hints?.exclude ?? []), cand.machine.id]) }
    const picked = this.deps.router.route(this.route!.service, this.hints, this)
    if (picked === undefined) return
    if (picked instanceof EdgeProxyError && picked.code === 'EP_NO_HEALTHY_MACHINE') { this.fail(err); return }
    this.routed(picked)
  }

  private respond(res: H2UpstreamResponse, edits: ResponseEdits): void {
    if (this.refused) { res.body.destroy(); return }
    this.tHead = performance.now()
    this.status = res.status
    if (this.stream.destroyed) { res.body.destroy(); return }
    const out: Record<string, string | string[]> = { ':status': String(res.status) }
    for (const [name, value] of res.headers) {
      if (HOP_BY_HOP.has(name) || name.startsWith('fly-replay') || edits.drop.has(name)) continue
      if (!edits.pristine && (name === 'server' || name === 'fly-request-id')) continue
      const prev = out[name]
      out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
    }
    if (!edits.pristine) {
      out.server = this.deps.serverHeader
      out.via = out.via === undefined ? '2 fly.io' : `${String(out.via)}, 2 fly.io`
      out['fly-request-id'] = this.reqId
    }
    for (const [name, value] of edits.addPairs) {
      const key = name.toLowerCase()
      const prev = out[key]
      out[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
    }
    this.responded = true
    const noBody = this.headers[':method'] === 'HEAD' || res.status === 204 || res.status === 304
    const trailers = res.trailers
    this.stream.respond(out, { endStream: noBody, waitForTrailers: !noBody && trailers !== undefined })
    this.deps.stats.responses++
    if (noBody) { res.body.resume(); return }
    if (trailers !== undefined) {
      // gRPC status travels in trailers: pass on whatever the Machine sent after its body
      this.stream.once('wantTrailers', () => {
        this.stream.sendTrailers(trailers() ?? {})
      })
    }
    res.body.on('error', () => this.stream.close(0x2 /* INTERNAL_ERROR */))
    res.body.on('data', (chunk: Buffer) => { this.bytes += chunk.length })
    res.body.pipe(this.stream)
  }

  /** finish: one entry in the request metrics and, sampled, the request log (when the stream closes). */
  private record(): void {
    const service = this.route?.service
    const m = this.cand?.machine ?? (service === undefined ? undefined : this.conn.sticky.get(service)?.machine)
    this.deps.requests.finished(this.route?.service.app ?? '-', 'h2', this.status, m?.id, m?.region, this.reqId, this.t0, this.tRouted, this.tHead, performance.now(), this.bytes)
  }

  /**
   * The body is over limits.maxRequestBodyBytes: the Machine's side is torn down (its request body errors),
   * and the client gets 413 if no response started, then a reset that stops its upload (RFC 9113 §8.1; with
   * CANCEL, as node:http2 sends no NO_ERROR reset once the response is complete); a response already under
   * way is cut instead.
   */
  private refuseBody(): void {
    if (this.refused) return
    const started = this.responded || this.stream.headersSent
    this.fail(bodyTooLarge(this.deps.limits.maxRequestBodyBytes))
    this.refused = true
    this.recorder?.destroy(new Error('request body over the limit'))
    if (!started && !this.stream.destroyed) this.stream.once('finish', () => this.stream.close(0x8 /* CANCEL */))
  }

  private fail(err: EdgeProxyError): void {
    if (this.refused) return
    if (this.replay?.pending === true) {
      // no replay target was reached: the fallback, or the replay's own error (FLY-SPEC §6)
      const next = this.replay.failed(err)
      if (!(next instanceof EdgeProxyError)) { this.release(); this.replayTo(next); return }
      err = next
    }
    this.status = err.status
    countError(this.deps.stats.routeErrors, err.code)
    this.release()
    if (this.responded || this.stream.destroyed || this.stream.headersSent) { this.stream.close(0x2); return }
    this.responded = true
    const body = errorBody(err, this.reqId)
    this.stream.respond({
      ':status': err.status,
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      [ERROR_HEADER]: err.code,
      'fly-request-id': this.reqId,
      server: this.deps.serverHeader,
    })
    this.stream.end(this.headers[':method'] === 'HEAD' ? undefined : body)
  }

  private release(): void {
    if (this.leased && this.cand !== undefined) {
      this.leased = false
      this.deps.router.release(this.cand.cell)
    }
  }
}

const HINT_HEADERS = ['fly-prefer-region', 'fly-force-region', 'fly-prefer-instance-id', 'fly-force-instance-id'] as const

function hintsOf(h: IncomingHttpHeaders): RoutingHints | undefined {
  let hints: RoutingHints | undefined
  for (const name of HINT_HEADERS) {
    const v = h[name]
    if (typeof v === 'string') hints = readRoutingHint(name, v, hints)
  }
  return hints
}

/** The JSON form's directive (up to MAX_DIRECTIVE_BYTES); a header-form body is only drained. */
function readDirectiveBody(body: Readable, json: boolean, done: (directive: Buffer | undefined) => void): void {
  if (!json) { body.resume(); done(undefined); return }
  const parts: Buffer[] = []
  let n = 0
  let finished = false
  const finish = (value: Buffer | undefined): void => { if (!finished) { finished = true; done(value) } }
  body.on('data', (chunk: Buffer) => {
    n += chunk.length
    if (n <= MAX_DIRECTIVE_BYTES) parts.push(chunk)
    else { body.destroy(); finish(undefined) }
  })
  body.once('end', () => finish(Buffer.concat(parts)))
  body.once('error', () => finish(undefined))
}
