import type { Socket } from 'node:net'
import { EdgeProxyError } from '../../schemas/errors.js'
import { errorResponse, redirectResponse } from '../error-response.js'
import type { ClientInfo, ListenerState, ProxyContext, Session } from '../proxy-context.js'
import { KeptBody } from '../replay/kept-body.js'
import { ReplayExchange } from '../replay/replay-exchange.js'
import type { ReplayTarget } from '../replay/replay-plan.js'
import { newRequestId } from '../request-id.js'
import type { RoutingHints } from '../routing/balancer.js'
import { routeForHost } from '../routing/resolve-route.js'
import type { RouteWaiter } from '../routing/router.js'
import type { Candidate, PortRoute } from '../routing/service-route.js'
import { countError } from '../stats.js'
import { connectionHeaderLines } from './forward-headers.js'
import { type BridgeOwner, H1ToH2cBridge } from './h1-to-h2c.js'
import {
  BODY_LENGTH, BODY_NONE, checkIncompleteHead, findHeadEnd, HEAD_BARE_LF, HEAD_INCOMPLETE, parseRequestHead,
  type RequestHead, skipLeadingCrlf,
} from './request-head.js'
import { bodyTooLarge } from './limits.js'
import { BODY_INVALID, BODY_TOO_LARGE, RequestBodyFraming } from './request-body.js'
import { NO_EDITS } from './response-edits.js'
import type { ResponseHead } from './response-head.js'
import { type RelayOwner, ResponseRelay } from './response-relay.js'
import { UpstreamConn, type UpstreamOwner } from './upstream-conn.js'

const S_HEAD = 0 // waiting for / reading a request head
const S_ROUTE = 1 // head read, waiting for a Machine (queue)
const S_CONNECT = 2 // Machine chosen, connecting
const S_FORWARD = 3 // request sent (body may still stream), response pending or streaming
const S_TUNNEL = 4 // after 101 Switching Protocols: bytes both ways
const S_CLOSED = 5

/** One Machine retry (issue 6); a stale pooled socket gets its own fresh-socket retry on top. */
const MAX_MACHINE_ATTEMPTS = 2
/** How long a closed connection may keep sending before it is reset. */
const LINGER_MS = 2000
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/**
 * One HTTP/1.1 client connection: the request lifecycle (route → connect → forward → finish) run once
 * per request, on own framing over node:net (shared/PERF-NOTES.md). Requests are handled one at a time;
 * pipelined bytes wait in `buf` until the response before them is complete.
 */
export class Http1Session implements Session, RouteWaiter, UpstreamOwner, BridgeOwner, RelayOwner {
  private state = S_HEAD
  /** Client bytes not consumed yet: a head being read, body bytes not yet sent, pipelined requests. */
  private buf: Buffer | undefined
  private scanFrom = 0
  private headStartedAt = 0
  private idleSince: number
  private clientPaused = false
  private clientEnded = false
  private inLoop = false
  private draining = false
  private closedAt = 0
  /** Idle timeout after the last response: the port's http_options.idle_timeout, else the proxy's. */
  private idleMs: number
  /** Per-request access lines only when someone reads them (no Date.now() on the hot path otherwise). */
  private readonly accessLog: boolean
  private startedAt = 0
  /** performance.now() at the request head, the Machine's pick and its first response byte (request log, metrics). */
  private t0 = 0
  private tRouted = 0
  private tHead = 0
  private bytesAtStart = 0
  private readonly connHeaders: string

  // the exchange in progress
  private req: RequestHead | undefined
  private reqId = ''
  private route: PortRoute | undefined
  private hints: RoutingHints | undefined
  private cand: Candidate | undefined
  private up: UpstreamConn | undefined
  /**
   * Which connect attempt is current. A candidate is the same object for every request to its Machine, so a
   * connect abandoned by a replay timeout would otherwise pass for the fallback's own connect to that Machine
   * and send the request a second time (issue 11: fly-replay under load).
   */
  private connectSeq = 0
  private attempts = 0
  private staleRetried = false
  private readonly body = new RequestBodyFraming()
  /** The whole request as sent, when it fit in the first write: it can be sent again on another socket. */
  private sentHead: string | undefined
  private sentBody: Buffer | undefined
  private replayable = false
  private preferredUnavailable: string | undefined
  /** The body as sent, kept up to limits.maxReplayBodyBytes so a fly-replay can send it again. */
  private readonly kept: KeptBody
  /** Set once a response of this exchange asked for a replay (proxy/replay/). */
  private replay: ReplayExchange | undefined

  // the response in progress
  private readonly relay: ResponseRelay
  private upstreamPaused = false
  /** `h2_backend`: this exchange goes over h2c instead of the framing below. */
  private bridge: H1ToH2cBridge | undefined

  constructor(
    private readonly client: Socket,
    private readonly info: ClientInfo,
    private readonly listener: ListenerState,
    private readonly ctx: ProxyContext,
  ) {
    this.idleSince = ctx.clock.now
    this.idleMs = ctx.timeouts.idleMs
    this.accessLog = ctx.log.isLevelEnabled('debug')
    this.connHeaders = connectionHeaderLines(info, ctx.region, '1.1')
    this.relay = new ResponseRelay(client, this, ctx.serverHeader)
    this.kept = new KeptBody(ctx.limits.maxReplayBodyBytes)
    client.on('data', (chunk: Buffer) => this.onClientData(chunk))
    client.on('end', () => this.onClientEnd())
    client.on('drain', () => this.onClientDrain())
    client.on('error', () => { /* 'close' follows and cleans up */ })
    client.on('close', () => this.onClientClose())
    ctx.sessions.add(this)
  }

  /** Bytes already read from the socket before the session took it (e.g. after a handshake). */
  start(initial: Buffer | undefined): void {
    if (initial !== undefined && initial.length > 0) this.onClientData(initial)
  }

  // ---- client side ----

  private onClientData(chunk: Buffer): void {
    switch (this.state) {
      case S_HEAD:
        this.buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk])
        this.processBuffered()
        return
      case S_FORWARD:
        if (!this.body.done) {
          if (this.bridge !== undefined) this.bridgeBody(chunk)
          else this.forwardBody(chunk)
          return
        }
        this.hold(chunk)
        return
      case S_TUNNEL:
        if (this.up !== undefined && !this.up.socket.write(chunk)) this.pauseClient()
        return
      case S_CLOSED:
        return
      default:
        this.hold(chunk)
    }
  }

  /** Keeps bytes for later (body before the Machine is connected, pipelined requests). */
  private hold(chunk: Buffer): void {
    this.buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk])
    if (this.buf.length > this.ctx.limits.maxBufferedBytes) this.pauseClient()
  }

  private pauseClient(): void {
    if (!this.clientPaused) { this.clientPaused = true; this.client.pause() }
  }

  private resumeClient(): void {
    if (this.clientPaused) { this.clientPaused = false; this.client.resume() }
  }

  /** Reads and starts as many buffered requests as can start now (a loop, not recursion: pipelining). */
  private processBuffered(): void {
    if (this.inLoop) return
    this.inLoop = true
    try {
      while (this.state === S_HEAD && this.buf !== undefined) {
        if (!this.readHead()) break
      }
    } finally {
      this.inLoop = false
    }
  }

  /** Returns true when a request was started (or answered) from the buffer. */
  private readHead(): boolean {
    let buf = this.buf!
    if (this.headStartedAt === 0) this.headStartedAt = this.ctx.clock.now
    if (buf[0] === 13) {
      const skip = skipLeadingCrlf(buf)
      if (skip > 0) {
        buf = buf.subarray(skip)
        this.buf = buf.length > 0 ? buf : undefined
        this.scanFrom = 0
        if (this.buf === undefined) return false
      }
    }
    const end = findHeadEnd(buf, this.scanFrom)
    if (end === HEAD_INCOMPLETE) {
      const err = checkIncompleteHead(buf, 0, this.ctx.limits)
      if (err !== undefined) { this.rejectRequest(err); return false }
      this.scanFrom = buf.length
      if (this.clientEnded) this.destroy() // FIN in the middle of a head: nothing to answer
      return false
    }
    if (end === HEAD_BARE_LF) {
      this.rejectRequest(new EdgeProxyError('EP_BAD_REQUEST', 'bare LF in the request head; lines must end in CRLF'))
      return false
    }
    const head = parseRequestHead(buf, 0, end, this.ctx.limits)
    if (head instanceof EdgeProxyError) { this.rejectRequest(head); return false }
    this.buf = end < buf.length ? buf.subarray(end) : undefined
    this.scanFrom = 0
    this.headStartedAt = 0
    this.beginRequest(head)
    return true
  }

  /** A request that cannot be read: answer 4xx and close (the framing of what follows is unknown). */
  private rejectRequest(err: EdgeProxyError): void {
    this.reqId = newRequestId(this.ctx.region)
    this.req = undefined
    this.closeWithError(err)
  }

  // ---- route ----

  private beginRequest(head: RequestHead): void {
    const ctx = this.ctx
    ctx.stats.requests++
    this.req = head
    this.reqId = newRequestId(ctx.region)
    this.t0 = performance.now()
    this.tRouted = this.tHead = 0
    this.bytesAtStart = this.client.bytesWritten
    if (this.accessLog) this.startedAt = Date.now()
    this.relay.begin(head, this.reqId, NO_EDITS, !head.keepAlive || this.clientEnded || this.draining || ctx.draining)
    this.body.begin(head, ctx.limits.maxRequestBodyBytes)
    if (head.bodyKind === BODY_LENGTH && head.contentLength > ctx.limits.maxRequestBodyBytes) {
      // refused before routing: no Machine is woken or sent anything for it
      this.route = undefined
      this.closeWithError(bodyTooLarge(ctx.limits.maxRequestBodyBytes))
      return
    }
    this.attempts = 0
    this.staleRetried = false
    this.hints = head.hints
    this.preferredUnavailable = undefined

    const route = routeForHost(ctx.index, this.listener, head.host, true)
    if (route instanceof EdgeProxyError) {
      this.route = undefined // not the previous request's app: this one has none
      this.answerError(route)
      return
    }
    this.route = route
    this.relay.edits = route.edits
    if (route.port.force_https && !this.info.tls) { this.redirectToHttps(head); return }

    const service = route.service
    const sticky = this.cand
    if (sticky !== undefined) {
      // type=connections: the connection stays on its Machine while that Machine may still take traffic,
      // unless this request carries routing headers (they are decided per request)
      if (this.hints === undefined && sticky.cell.owner === service && ctx.balancer.candidates(service).byId.get(sticky.machine.id) === sticky) {
        this.connect()
        return
      }
      this.releaseLease()
    }
    this.state = S_ROUTE
    const picked = ctx.router.route(service, this.hints, this)
    if (picked !== undefined) this.routed(picked)
  }

  /** RouteWaiter: names the request in the reason of a Machine started for it. */
  get requestId(): string { return this.reqId }

  /** RouteWaiter: the router's answer, now or after queueing. */
  routed(result: Candidate | EdgeProxyError): void {
    if (this.state === S_CLOSED) {
      if (!(result instanceof EdgeProxyError)) this.ctx.router.release(result.cell)
      return
    }
    if (result instanceof EdgeProxyError) { this.answerError(result); return }
    this.cand = result
    const prefer = this.hints?.preferInstance
    this.preferredUnavailable = prefer !== undefined && prefer !== result.machine.id ? prefer : undefined
    if (this.replay?.pending === true) this.sentHead = this.replay.head(this.upstreamHead(this.replay.request(this.req!)))
    this.connect()
  }

  private redirectToHttps(head: RequestHead): void {
    const httpsPort = this.ctx.bindPortOf(443)
    const host = head.host + (httpsPort === 443 ? '' : `:${httpsPort}`)
    const close = this.relay.framing.close || head.bodyKind !== BODY_NONE
    this.client.write(redirectResponse(`https://${host}${head.target}`, { requestId: this.reqId, server: this.ctx.serverHeader, close, head: head.method === 'HEAD' }))
    this.recordRequest(301)
    this.endExchange(close)
  }

  // ---- connect ----

  private connect(): void {
    if (this.tRouted === 0) this.tRouted = performance.now()
    if (this.route!.port.http_options?.h2_backend === true) { this.forwardH2c(); return }
    const ctx = this.ctx
    const m = this.cand!.machine
    const port = this.route!.service.config.internal_port
    let up = this.up
    // pooled by Machine id, not address: Machines of different nodes may share a private address (issue 7)
    if (up !== undefined && (!up.alive || up.host !== m.id || up.port !== port)) {
      up.discard()
      up = this.up = undefined
    }
    if (up === undefined && m.privateAddr !== undefined && !this.staleRetried) {
      up = ctx.pool.take(m.id, port)
      if (up !== undefined) ctx.stats.upstreamReused++
    }
    if (up !== undefined) {
      this.attach(up)
      this.forward()
      return
    }
    this.state = S_CONNECT
    ctx.stats.upstreamConnects++
    const seq = ++this.connectSeq
    ctx.connector.connect(m, port, (err, socket) => {
      if (this.state !== S_CONNECT || this.connectSeq !== seq) { socket?.destroy(); return }
      if (err !== undefined || socket === undefined) {
        ctx.stats.upstreamConnectFailures++
        this.retryOrFail(err ?? new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${m.id} is unreachable`), true)
        return
      }
      socket.setNoDelay(true)
      this.attach(new UpstreamConn(socket, m.id, port, ctx.pool))
      this.forward()
    })
  }

  private attach(up: UpstreamConn): void {
    up.owner = this
    this.up = up
  }

  /**
   * The Machine failed before any response byte. A request that never left, or an idempotent one we can
   * send again whole, goes to another Machine once (issue 6); otherwise 502.
   */
  private retryOrFail(err: EdgeProxyError, neverSent: boolean): void {
    const req = this.req!
    const failed = this.cand?.machine.id
    const canResend = neverSent || (this.replayable && IDEMPOTENT.has(req.method))
    this.releaseLease()
    if (canResend && ++this.attempts < MAX_MACHINE_ATTEMPTS && failed !== undefined) {
      this.ctx.stats.retries++
      this.ctx.log.debug({ err, machine: failed, reqId: this.reqId }, 'Machine failed before responding, trying another')
      const exclude = new Set(this.hints?.exclude ?? [])
      exclude.add(failed)
      this.hints = { ...this.hints, exclude }
      this.state = S_ROUTE
      const picked = this.ctx.router.route(this.route!.service, this.hints, this)
      if (picked === undefined) return
      if (picked instanceof EdgeProxyError && picked.code === 'EP_NO_HEALTHY_MACHINE') { this.answerError(err); return }
      this.routed(picked)
      return
    }
    this.answerError(err)
  }

  // ---- forward ----

  /** Sends the request head with whatever body is already here, in one write. */
  private forward(): void {
    const req = this.req!
    const up = this.up!
    this.state = S_FORWARD
    this.relay.restart()
    if (this.replay !== undefined) this.replay.reached()

    // a retry sends the same bytes again (retries happen only when they were kept whole)
    let head = this.sentHead
    if (head === undefined) {
      head = this.upstreamHead(req)
      this.sentBody = this.takeBody()
      if (this.state === S_CLOSED) return // the body's framing was invalid: answered 400
      this.sentHead = head
      this.replayable = this.body.done
      this.kept.begin(this.sentBody)
    }
    const body = this.sentBody
    let ok: boolean
    if (body === undefined) {
      ok = up.socket.write(head, 'latin1')
    } else {
      const out = Buffer.allocUnsafe(head.length + body.length)
      out.write(head, 0, 'latin1')
      body.copy(out, head.length)
      ok = up.socket.write(out)
    }
    if (!this.body.done) {
      // the body continues: read it now unless the Machine is not keeping up
      if (ok) this.resumeClient()
      else this.pauseClient()
    }
  }

  private upstreamHead(req: RequestHead): string {
    const route = this.route!
    let head = `${req.method} ${req.target} HTTP/1.1\r\n${req.lines}`
    if (req.hostHeader === '') head += `Host: ${route.service.app}.${this.ctx.index.domain}\r\n`
    head += this.connHeaders
    head += req.forwardedFor === undefined ? `X-Forwarded-For: ${this.info.ip}\r\n` : `X-Forwarded-For: ${req.forwardedFor}, ${this.info.ip}\r\n`
    if (!req.hasForwardedPort) head += `X-Forwarded-Port: ${route.publicPort}\r\n`
    head += `Fly-Request-Id: ${this.reqId}\r\n`
    if (this.preferredUnavailable !== undefined) head += `Fly-Preferred-Instance-Unavailable: ${this.preferredUnavailable}\r\n`
    if (req.upgrade !== undefined) head += `Connection: Upgrade\r\nUpgrade: ${req.upgrade}\r\n`
    return head + '\r\n'
  }

  /** Takes the body bytes of this request from the buffer (as far as they are here). */
  private takeBody(): Buffer | undefined {
    const buf = this.buf
    if (this.body.done || buf === undefined) return undefined
    const n = this.body.consume(buf)
    if (n === BODY_INVALID) { this.failBody(); return undefined }
    if (n === BODY_TOO_LARGE) { this.refuseBody(); return undefined }
    this.buf = n < buf.length ? buf.subarray(n) : undefined
    return n === buf.length ? buf : buf.subarray(0, n)
  }

  /** Streams request body bytes to the Machine; bytes after the body wait in `buf`. */
  private forwardBody(chunk: Buffer): void {
    const n = this.body.consume(chunk)
    if (n === BODY_INVALID) { this.failBody(); return }
    if (n === BODY_TOO_LARGE) { this.refuseBody(); return }
    this.replayable = false
    const part = n === chunk.length ? chunk : chunk.subarray(0, n)
    if (n > 0) this.kept.add(part)
    const up = this.up
    if (up !== undefined && n > 0 && !up.socket.write(part)) this.pauseClient()
    if (n < chunk.length) this.hold(chunk.subarray(n))
    if (this.replay?.awaitingBody === true) this.replayAfterBody()
  }

  /**
   * A chunked body grew past limits.maxRequestBodyBytes: the Machine's connection is torn down mid-request,
   * and the client gets 413 if no response byte was sent yet; otherwise its connection is cut.
   */
  private refuseBody(): void {
    this.bridge?.abort()
    this.bridge = undefined
    this.up?.discard()
    this.up = undefined
    this.closeWithError(bodyTooLarge(this.ctx.limits.maxRequestBodyBytes))
  }

  /** Invalid chunked framing in the request body: the Machine's view of the stream is lost. */
  private failBody(): void {
    const err = new EdgeProxyError('EP_BAD_REQUEST', 'invalid chunked encoding in the request body')
    this.up?.discard()
    this.up = undefined
    this.closeWithError(err)
  }

  // ---- h2_backend ----

  private forwardH2c(): void {
    this.state = S_FORWARD
    const bridge = new H1ToH2cBridge(this, this.client, this.req!, this.body, this.reqId, this.info, this.route!, this.ctx)
    this.bridge = bridge
    bridge.send(this.cand!, this.preferredUnavailable)
    if (!this.body.done && this.buf !== undefined) {
      const held = this.buf
      this.buf = undefined
      this.bridgeBody(held)
    }
  }

  private bridgeBody(chunk: Buffer): void {
    const n = this.bridge!.onClientBody(chunk)
    if (this.body.tooLarge) { this.refuseBody(); return }
    if (n < chunk.length) this.hold(chunk.subarray(n))
  }

  bridgeFailed(err: EdgeProxyError): void {
    if (this.state === S_CLOSED) return
    this.bridge = undefined
    this.ctx.stats.upstreamConnectFailures++
    this.retryOrFail(err, this.req!.bodyKind === BODY_NONE)
  }

  bridgeDone(close: boolean, status: number): void {
    if (this.state === S_CLOSED) return
    this.bridge = undefined
    this.ctx.stats.responses++
    if (this.route!.service.countsRequests) this.releaseLease()
    this.recordRequest(status)
    this.endExchange(close || !this.body.done)
  }

  bridgeBroken(): void { this.destroy() }

  // ---- upstream events ----

  onUpstreamData(chunk: Buffer): void {
    if (this.state === S_TUNNEL) {
      if (!this.client.write(chunk)) this.pauseUpstream()
      return
    }
    if (this.state !== S_FORWARD) { this.up?.discard(); this.up = undefined; return } // unsolicited bytes
    if (this.tHead === 0) this.tHead = performance.now()
    this.relay.onData(chunk)
  }

  // ---- RelayOwner ----

  get requestDone(): boolean { return this.body.done }

  responseComplete(): void { this.finish() }

  responseInvalid(message: string): void { this.badGateway(message) }

  responseBroken(reason: string): void { this.truncateResponse(reason) }

  upgraded(): void {
    this.ctx.stats.upgrades++
    this.state = S_TUNNEL
    const held = this.buf
    this.buf = undefined
    if (held !== undefined) this.up!.socket.write(held)
    this.resumeClient()
  }

  // ---- fly-replay (proxy/replay/) ----

  /** The Machine answered with fly-replay: that answer is a routing decision and never reaches the client. */
  replayResponse(res: ResponseHead, body: Buffer | undefined): void {
    const up = this.up
    this.up = undefined
    if (up !== undefined) {
      up.responses++
      if (this.relay.reusable && this.body.done && up.alive) {
        up.owner = undefined
        if (!this.ctx.pool.put(up, this.ctx.clock.now)) up.discard()
      } else {
        up.discard()
      }
    }
    const source = this.cand
    this.releaseLease()
    if (source === undefined) { this.answerError(new EdgeProxyError('EP_INTERNAL', 'a fly-replay response without a Machine')); return }
    const replay = this.replay ??= new ReplayExchange(this.ctx.index)
    const target = replay.next({ header: res.replay, json: res.replayJson, body }, { machine: source.machine, route: this.route! }, this.kept)
    if (this.accessLog) this.ctx.log.debug({ reqId: this.reqId, from: source.machine.id, to: target instanceof EdgeProxyError ? target.code : target.app }, 'fly-replay')
    if (target instanceof EdgeProxyError) { this.answerError(target); return }
    if (!this.body.done) {
      // the Machine answered before the client sent the whole body: read the rest, then replay it
      replay.awaitingBody = true
      this.resumeClient()
      return
    }
    this.replayTo(target)
  }

  private replayAfterBody(): void {
    const replay = this.replay!
    if (this.kept.overflow) { replay.awaitingBody = false; this.answerError(replay.tooLarge(undefined, this.kept)); return }
    if (this.body.done) this.replayTo(replay.target!)
  }

  /** route → connect → forward again, to the replay's target, with the request as first sent (body included). */
  private replayTo(target: ReplayTarget): void {
    this.route = target.route
    this.hints = target.hints
    this.relay.again(target.route.edits)
    this.sentHead = undefined // rebuilt in routed(), with fly-replay-src
    this.sentBody = this.kept.take()
    this.replayable = true
    this.attempts = 0
    this.staleRetried = false
    this.preferredUnavailable = undefined
    this.state = S_ROUTE
    this.replay!.begin(() => this.replayTimedOut())
    const picked = this.ctx.router.route(target.route.service, target.hints, this)
    if (picked !== undefined) this.routed(picked)
  }

  /** The replay's `timeout` passed before any target accepted a connection. */
  private replayTimedOut(): void {
    const replay = this.replay
    if (this.state === S_CLOSED || replay === undefined || !replay.pending) return
    if (this.state === S_ROUTE) this.ctx.router.cancel(this.route!.service, this)
    this.releaseLease() // a connect still in flight is dropped when it lands (connectSeq or state changed)
    this.answerError(replay.timeoutError())
  }

  onUpstreamDrain(): void {
    if (this.state === S_FORWARD || this.state === S_TUNNEL) this.resumeClient()
  }

  onUpstreamEnd(conn: UpstreamConn): void {
    if (conn !== this.up) return
    if (this.state === S_TUNNEL) { this.client.end(); return }
    if (this.state === S_FORWARD && this.relay.onEnd()) return // a close-delimited response ended
    conn.socket.destroy() // 'close' reports the failure
  }

  onUpstreamClose(conn: UpstreamConn, err: Error | undefined): void {
    if (conn !== this.up) return
    this.up = undefined
    if (this.state === S_TUNNEL) { this.client.end(); this.client.destroySoon(); return }
    if (this.state !== S_FORWARD) return // an idle sticky connection closed: the next request reconnects
    if (this.relay.bytesSeen) { this.truncateResponse('the Machine closed the connection during the response'); return }
    if (conn.responses > 0 && this.replayable && !this.staleRetried) {
      // a pooled connection the Machine had just closed (shared/PERF-NOTES.md): once more on a fresh one
      this.staleRetried = true
      this.ctx.stats.retries++
      this.connect()
      return
    }
    // the backhaul names what failed on its side (EP_BACKHAUL_UNREACHABLE, EP_MACHINE_RESET): keep its code
    if (err instanceof EdgeProxyError) { this.retryOrFail(err, false); return }
    const reason = err === undefined ? 'closed the connection' : `reset the connection (${(err as NodeJS.ErrnoException).code ?? err.message})`
    this.retryOrFail(new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${this.cand?.machine.id} ${reason} before responding`, { cause: err }), false)
  }

  pauseUpstream(): void {
    if (!this.upstreamPaused && this.up !== undefined) { this.upstreamPaused = true; this.up.socket.pause() }
  }

  private onClientDrain(): void {
    if (this.upstreamPaused) {
      this.upstreamPaused = false
      this.up?.socket.resume()
    }
  }

  // ---- finish ----

  /** The response is complete: hand the upstream back, release the lease, go on with the next request. */
  private finish(): void {
    const ctx = this.ctx
    ctx.stats.responses++
    const up = this.up
    if (up !== undefined) {
      up.responses++
      const keep = this.relay.reusable && this.body.done && up.alive
      if (this.upstreamPaused) { this.upstreamPaused = false; up.socket.resume() }
      if (!keep) {
        up.discard()
        this.up = undefined
      } else if (this.route!.service.countsRequests || this.relay.framing.close) {
        // type=requests: the connection goes back to the shared pool (type=connections keeps it on this client)
        up.owner = undefined
        this.up = undefined
        if (!ctx.pool.put(up, ctx.clock.now)) up.discard()
      }
    }
    if (this.route!.service.countsRequests) this.releaseLease()
    this.recordRequest(this.relay.res?.status ?? 0)
    if (this.accessLog) {
      ctx.log.debug({ reqId: this.reqId, app: this.route!.service.app, machine: this.cand?.machine.id, status: this.relay.res?.status, ms: Date.now() - this.startedAt }, 'request finished')
    }
    this.endExchange(this.relay.framing.close || !this.body.done)
  }

  /** After a response (proxied or made here): close, or wait for / start the next request. */
  private endExchange(close: boolean): void {
    this.req = undefined
    this.sentHead = undefined
    this.sentBody = undefined
    if (this.kept.size > 0) this.kept.begin(undefined)
    if (this.replay !== undefined) {
      this.replay.dispose()
      this.replay = undefined
      // the next request asks the app again rather than staying on the replay's target
      this.releaseLease()
    }
    if (close || this.clientEnded) {
      this.close()
      return
    }
    this.state = S_HEAD
    this.idleSince = this.ctx.clock.now
    const idleSeconds = this.route?.port.http_options?.idle_timeout
    this.idleMs = idleSeconds === undefined ? this.ctx.timeouts.idleMs : idleSeconds * 1000
    this.resumeClient()
    if (this.buf !== undefined) {
      if (this.inLoop) return // the loop in processBuffered picks it up
      this.processBuffered()
    }
  }

  /** A proxy-made error for the current request; keeps the connection when nothing is left unread. */
  private answerError(err: EdgeProxyError): void {
    if (this.replay?.pending === true) {
      // no replay target was reached: the fallback, or the replay's own error (FLY-SPEC §6)
      const next = this.replay.failed(err)
      if (!(next instanceof EdgeProxyError)) { this.releaseLease(); this.replayTo(next); return }
      err = next
    }
    const req = this.req
    const ctx = this.ctx
    countError(ctx.stats.routeErrors, err.code)
    if (err.status >= 500) ctx.log.debug({ err, reqId: this.reqId, host: req?.host }, 'request failed')
    this.releaseLease()
    this.recordRequest(err.status)
    if (this.relay.started) { this.destroy(); return }
    // an unread body would be taken for the next request: close instead
    const close = req === undefined || this.relay.framing.close || !this.body.done
    if (this.up !== undefined) { this.up.discard(); this.up = undefined }
    this.client.write(errorResponse(err, { requestId: this.reqId, server: ctx.serverHeader, close, head: req?.method === 'HEAD' }))
    this.endExchange(close)
  }

  private closeWithError(err: EdgeProxyError): void {
    countError(this.ctx.stats.clientErrors, err.code)
    if (this.t0 === 0) this.t0 = performance.now()
    this.recordRequest(err.status)
    if (this.relay.started || this.state === S_CLOSED) { this.destroy(); return }
    this.client.write(errorResponse(err, { requestId: this.reqId, server: this.ctx.serverHeader, close: true }))
    this.close()
  }

  private badGateway(message: string): void {
    this.up?.discard()
    this.up = undefined
    if (this.relay.started) { this.destroy(); return }
    this.answerError(new EdgeProxyError('EP_BAD_GATEWAY_RESPONSE', message))
  }

  /** The response started and cannot be completed: the client must see a broken message, not a short one. */
  private truncateResponse(reason: string): void {
    this.ctx.log.debug({ reqId: this.reqId, reason }, 'response cut short')
    countError(this.ctx.stats.routeErrors, 'EP_MACHINE_RESET')
    this.destroy()
  }

  /** finish: one entry in the request metrics and, sampled, the request log. */
  private recordRequest(status: number): void {
    const m = this.cand?.machine
    this.ctx.requests.finished(
      this.route?.service.app ?? '-', this.info.tls ? 'https' : 'http', status, m?.id, m?.region, this.reqId,
      this.t0, this.tRouted, this.tHead, performance.now(), this.client.bytesWritten - this.bytesAtStart,
    )
    this.t0 = 0
  }

  private releaseLease(): void {
    const cand = this.cand
    if (cand === undefined) return
    this.cand = undefined
    this.ctx.router.release(cand.cell)
  }

  // ---- connection end, timers, drain ----

  /**
   * Ends our side and keeps reading (and discarding) until the client closes: closing with unread bytes
   * would reset the connection and could destroy the response before the client read it. The sweeper
   * destroys connections that linger too long.
   */
  private close(): void {
    this.state = S_CLOSED
    this.closedAt = this.ctx.clock.now
    this.releaseLease()
    this.buf = undefined
    this.resumeClient()
    this.client.end()
  }

  private onClientEnd(): void {
    this.clientEnded = true
    switch (this.state) {
      case S_HEAD:
        if (this.buf === undefined) this.client.end()
        else this.processBuffered()
        return
      case S_TUNNEL:
        this.up?.socket.end()
        return
      case S_FORWARD:
        if (!this.body.done) { this.destroy(); return } // body cut short: the request cannot complete
        this.relay.framing.close = true
        return
      default:
        this.relay.framing.close = true // answer the request that is here, then close
    }
  }

  private onClientClose(): void {
    const ctx = this.ctx
    const wasQueued = this.state === S_ROUTE
    this.state = S_CLOSED
    ctx.sessions.delete(this)
    if (wasQueued && this.route !== undefined) ctx.router.cancel(this.route.service, this)
    this.releaseLease()
    this.bridge?.abort()
    this.bridge = undefined
    this.replay?.dispose()
    const up = this.up
    this.up = undefined
    if (up !== undefined) {
      // an idle sticky connection is still in step and can serve others; one mid-exchange cannot
      if (this.req === undefined && up.alive && this.relay.reusable) {
        up.owner = undefined
        if (!ctx.pool.put(up, ctx.clock.now)) up.discard()
      } else {
        up.discard()
      }
    }
    this.buf = undefined
  }

  sweep(now: number): void {
    if (this.state === S_CLOSED) {
      if (now - this.closedAt >= LINGER_MS) this.client.destroy()
      return
    }
    if (this.state !== S_HEAD) return
    const t = this.ctx.timeouts
    if (this.buf !== undefined && this.headStartedAt !== 0) {
      if (now - this.headStartedAt >= t.headersMs) {
        this.reqId = newRequestId(this.ctx.region)
        this.closeWithError(new EdgeProxyError('EP_REQUEST_TIMEOUT', `the request head did not arrive within ${t.headersMs} ms`))
      }
    } else if (now - this.idleSince >= this.idleMs || this.draining) {
      this.close()
    }
  }

  drain(): void {
    this.draining = true
    if (this.state === S_HEAD && this.buf === undefined) {
      this.close()
    } else if (this.state !== S_CLOSED) {
      this.relay.framing.close = true
    }
  }

  destroy(): void {
    this.state = S_CLOSED
    this.up?.discard()
    this.up = undefined
    this.client.destroy()
  }
}
