import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { BACKHAUL_ALPN, type BackhaulOpen, BackhaulRefusalSchema, parseBackhaulJson } from '../../schemas/backhaul.js'
import { EdgeProxyError, ERROR_TABLE } from '../../schemas/errors.js'
import { BackhaulStream, type StreamHost } from './backhaul-stream.js'
import { FrameWriter } from './frame-writer.js'
import {
  controlFrame, Deframer, F_DATA, F_FIN, F_GOAWAY, F_OPEN, F_OPEN_FAIL, F_OPEN_OK, F_PING, F_PONG, F_RST, F_WINDOW, type FrameSink,
} from './frames.js'
import type { BackhaulTls } from './tls-options.js'
import { clientTlsOptions } from './tls-options.js'

export type OpenDone = (err: EdgeProxyError | undefined, stream: BackhaulStream | undefined) => void

export interface EdgeConnectionInit {
  node: string
  host: string
  port: number
  tls: BackhaulTls
  /** TCP connect + TLS handshake. */
  connectTimeoutMs: number
  /** A quiet connection is pinged this often, and declared dead when a ping goes unanswered this long. */
  pingIntervalMs: number
  pingTimeoutMs: number
  /** A connection without streams for this long is closed. */
  idleCloseMs: number
  /** A TLS session of an earlier connection to the same node (resumption skips the certificate exchange). */
  session: Buffer | undefined
  log: Logger
}

export interface EdgeConnectionEvents {
  /** TLS is up: the node is reachable. */
  connected(conn: EdgeConnection): void
  /** Gone for good (`err` when it failed rather than closed idle or drained). */
  closed(conn: EdgeConnection, err: EdgeProxyError | undefined): void
  session(conn: EdgeConnection, session: Buffer): void
}

interface PendingOpen {
  readonly stream: BackhaulStream
  readonly done: OpenDone
  readonly timer: NodeJS.Timeout
}

/** Stream ids are odd and increase; near the top of u31 the connection retires and a new one starts at 1. */
const LAST_STREAM_ID = 0x7fff_fff0

/**
 * The edge's end of one backhaul connection to one worker node: one TLS 1.3 socket carrying many streams
 * (docs/backhaul.md has the measurements behind one multiplexed connection rather than a socket per
 * stream). Opens wait for the worker's OPEN_OK, so a failure before that is a connect failure the proxy
 * may retry on another Machine; a connection that fails takes its streams with it, each seeing
 * EP_BACKHAUL_UNREACHABLE.
 */
export class EdgeConnection implements FrameSink, StreamHost {
  state: 'connecting' | 'open' | 'draining' | 'closed' = 'connecting'
  readonly writer: FrameWriter
  private readonly socket: TLSSocket
  private readonly deframer = new Deframer(this)
  private readonly streams = new Map<number, BackhaulStream>()
  private readonly pending = new Map<number, PendingOpen>()
  /** Opens asked for before the handshake finished; sent once it does. */
  private queued: Array<{ id: number; payload: Buffer }> = []
  private nextId = 1
  private readonly connectTimer: NodeJS.Timeout
  private tick: NodeJS.Timeout | undefined
  private heard = false
  private pingSentAt = 0
  private idleSince = 0
  readonly rtt = { lastMs: undefined as number | undefined }
  /** The handshake completed (a later failure is not a failed dial). */
  connectedOnce = false

  constructor(private readonly init: EdgeConnectionInit, private readonly events: EdgeConnectionEvents) {
    this.socket = tlsConnect({ ...clientTlsOptions(init.tls, init.node), host: init.host, port: init.port, session: init.session })
    this.socket.setNoDelay(true)
    this.socket.setKeepAlive(true, init.pingIntervalMs)
    this.writer = new FrameWriter(this.socket)
    this.connectTimer = setTimeout(() => this.fail(`did not complete the TLS handshake within ${init.connectTimeoutMs} ms`), init.connectTimeoutMs)
    this.socket.once('secureConnect', () => this.onSecure())
    this.socket.on('session', (s: Buffer) => this.events.session(this, s))
    this.socket.on('data', (chunk: Buffer) => { this.heard = true; this.deframer.feed(chunk) })
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(describeSocketError(err)))
    this.socket.on('end', () => {
      if (this.state === 'draining' && this.load === 0) this.closeQuietly() // the worker drained (GOAWAY) and closed
      else this.fail('closed the connection')
    })
    this.socket.on('close', () => this.fail('closed the connection'))
  }

  get node(): string { return this.init.node }
  get address(): string { return `${this.init.host}:${this.init.port}` }
  /** Streams open or opening. */
  get load(): number { return this.streams.size + this.pending.size + this.queued.length }
  get usable(): boolean { return this.state === 'connecting' || this.state === 'open' }
  /** Usable and with stream ids left: new streams may start here. */
  get acceptsStreams(): boolean { return this.usable && this.nextId <= LAST_STREAM_ID }

  /** Opens a stream to a Machine on the worker; `done` runs exactly once. */
  open(req: BackhaulOpen, timeoutMs: number, done: OpenDone): void {
    if (!this.acceptsStreams) { done(this.unreachable('is closing this connection'), undefined); return }
    const id = this.nextId
    this.nextId += 2
    const stream = new BackhaulStream(this, id, this.init.node, req.machine)
    const timer = setTimeout(() => this.openTimedOut(id, timeoutMs), timeoutMs)
    this.pending.set(id, { stream, done, timer })
    const payload = Buffer.from(JSON.stringify(req))
    if (this.state === 'open') this.writer.write(controlFrame(F_OPEN, id, payload))
    else this.queued.push({ id, payload })
  }

  /** No new streams; closes once the open ones end. */
  drain(): void {
    if (this.state !== 'open' && this.state !== 'connecting') return
    this.state = 'draining'
    if (this.load === 0) this.closeQuietly()
  }

  /** Closes at once; streams still open fail. */
  destroy(reason: string): void {
    this.fail(reason)
  }

  // ---- StreamHost ----

  released(stream: BackhaulStream, tellPeer: boolean): void {
    if (this.streams.get(stream.id) !== stream) return
    this.streams.delete(stream.id)
    if (tellPeer && this.state !== 'closed') this.writer.write(controlFrame(F_RST, stream.id))
    this.afterStreamEnded()
  }

  // ---- FrameSink ----

  onData(id: number, chunk: Buffer): void {
    const s = this.streams.get(id)
    if (s !== undefined && !s.onData(chunk)) this.protocolError(`node ${this.init.node} sent more than the window of stream ${id}`)
  }

  onControl(type: number, id: number, payload: Buffer): void {
    switch (type) {
      case F_OPEN_OK: {
        const p = this.pending.get(id)
        if (p === undefined) return // given up on already (timeout or the client left): the RST is on its way
        this.pending.delete(id)
        clearTimeout(p.timer)
        this.streams.set(id, p.stream)
        p.done(undefined, p.stream)
        return
      }
      case F_OPEN_FAIL: {
        const p = this.pending.get(id)
        if (p === undefined) return
        this.pending.delete(id)
        clearTimeout(p.timer)
        p.done(this.refusal(payload, id), undefined)
        this.afterStreamEnded()
        return
      }
      case F_FIN: this.streams.get(id)?.onFin(); return
      case F_RST: {
        const s = this.streams.get(id)
        if (s === undefined) return
        this.streams.delete(id)
        s.onRst(payload.length === 0 ? undefined : this.refusal(payload, id))
        this.afterStreamEnded()
        return
      }
      case F_WINDOW: {
        if (payload.length !== 4) { this.protocolError('WINDOW frame without a 4-byte increment'); return }
        this.streams.get(id)?.onWindow(payload.readUInt32BE(0))
        return
      }
      case F_PING: this.writer.write(controlFrame(F_PONG, 0, payload)); return
      case F_PONG:
        if (this.pingSentAt !== 0) this.rtt.lastMs = performance.now() - this.pingSentAt
        this.pingSentAt = 0
        return
      case F_GOAWAY: this.drain(); return
      case F_DATA: return // zero-length DATA: nothing to deliver
      default: this.protocolError(`unexpected frame type ${type} from a worker`)
    }
  }

  onProtocolError(message: string): void {
    this.protocolError(message)
  }

  // ---- internals ----

  private onSecure(): void {
    clearTimeout(this.connectTimer)
    if (this.state === 'closed') return
    if (this.socket.alpnProtocol !== BACKHAUL_ALPN) {
      this.fail(`does not speak ${BACKHAUL_ALPN} (ALPN ${String(this.socket.alpnProtocol)}); run the same edgeproxy version on every node`)
      return
    }
    if (this.state === 'connecting') this.state = 'open'
    this.connectedOnce = true
    this.idleSince = performance.now()
    const queued = this.queued
    this.queued = []
    for (const q of queued) if (this.pending.has(q.id)) this.writer.write(controlFrame(F_OPEN, q.id, q.payload))
    this.tick = setInterval(() => this.onTick(), this.init.pingIntervalMs)
    this.tick.unref()
    this.events.connected(this)
    if (this.state === 'draining' && this.load === 0) this.closeQuietly()
  }

  private onTick(): void {
    const now = performance.now()
    if (this.pingSentAt !== 0) {
      if (now - this.pingSentAt > this.init.pingTimeoutMs) this.fail(`did not answer a ping within ${this.init.pingTimeoutMs} ms`)
      return
    }
    if (this.load === 0 && now - this.idleSince >= this.init.idleCloseMs) { this.closeQuietly(); return }
    if (!this.heard) {
      this.pingSentAt = now
      const nonce = Buffer.allocUnsafe(8)
      nonce.writeDoubleBE(now)
      this.writer.write(controlFrame(F_PING, 0, nonce))
    }
    this.heard = false
  }

  private openTimedOut(id: number, timeoutMs: number): void {
    const p = this.pending.get(id)
    if (p === undefined) return
    this.pending.delete(id)
    if (this.state === 'open' || this.state === 'draining') this.writer.write(controlFrame(F_RST, id))
    p.done(this.unreachable(`did not answer within ${timeoutMs} ms`), undefined)
    this.afterStreamEnded()
  }

  private afterStreamEnded(): void {
    if (this.load > 0) return
    this.idleSince = performance.now()
    if (this.state === 'draining') this.closeQuietly()
  }

  private refusal(payload: Buffer, id: number): EdgeProxyError {
    const r = parseBackhaulJson(BackhaulRefusalSchema, payload, 'refusal')
    if (typeof r === 'string') return this.unreachable(`refused stream ${id} with an unreadable reason (${r})`)
    // the worker's socket error travels as the cause, as it would for a local Machine (autostart retries refusals)
    const cause = r.errno === undefined ? undefined : Object.assign(new Error(r.errno), { code: r.errno })
    // a worker that says "not here" or "no such port" contradicts this edge's catalog: to the client that is a
    // bad gateway (Fly's PR02 is retried, then a 502), never the 404 the code has on the admin API
    if (ERROR_TABLE[r.code].status < 500) return new EdgeProxyError('EP_MACHINE_UNREACHABLE', `${r.message} (node ${this.init.node} refused it: ${r.code})`, { cause })
    return new EdgeProxyError(r.code, `${r.message} (node ${this.init.node}, over the backhaul)`, { cause })
  }

  private unreachable(what: string): EdgeProxyError {
    return new EdgeProxyError('EP_BACKHAUL_UNREACHABLE', `node ${this.init.node} (backhaul ${this.address}) ${what}`)
  }

  private protocolError(message: string): void {
    this.init.log.warn({ node: this.init.node, message }, 'backhaul protocol error; closing the connection')
    this.fail(`broke the backhaul protocol: ${message}`)
  }

  /** Closed without failing anything: idle, or drained. */
  private closeQuietly(): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.teardown()
    this.socket.end()
    this.socket.destroySoon()
    this.events.closed(this, undefined)
  }

  private fail(reason: string): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    const err = this.unreachable(reason)
    this.teardown()
    this.socket.destroy()
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.done(err, undefined) }
    this.pending.clear()
    this.queued = []
    const streams = [...this.streams.values()]
    this.streams.clear()
    for (const s of streams) s.onRst(err)
    this.events.closed(this, err)
  }

  private teardown(): void {
    clearTimeout(this.connectTimer)
    clearInterval(this.tick)
    this.tick = undefined
    this.writer.dropWaiters()
  }
}

/** The likely cause in words: certificate problems are the ones operators need spelled out. */
function describeSocketError(err: NodeJS.ErrnoException): string {
  const code = err.code ?? ''
  if (code === 'ECONNREFUSED') return 'refused the connection (is its daemon running with --backhaul-listen?)'
  if (code.startsWith('ERR_TLS_CERT_ALTNAME') || /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET/.test(code)) {
    return `presented a certificate this node does not trust (${code}: ${err.message}); both nodes need certificates from the same fleet CA`
  }
  return `failed (${code || err.message})`
}
