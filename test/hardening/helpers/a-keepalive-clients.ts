import { randomUUID } from 'node:crypto'
import { connect, type Socket } from 'node:net'

/**
 * Keep-alive HTTP/1.1 clients on raw sockets, for shutdown tests: unlike a pooled client library, they
 * see exactly when and how each connection ended — after a response that said `Connection: close`, while
 * idle between requests, mid-response, by a reset — and whether a new connection was refused at connect.
 * Each request carries a unique `x-token`; a complete answer is the Machine's JSON naming that token, the
 * path and the number of body bytes it read.
 */
export interface KeepAliveInit {
  host: string
  port: number
  /** The Host header (the app's hostname). */
  hostHeader: string
  clients: number
  path: (i: number) => string
  /** A request body for request i (sent as POST with Content-Length); none: GET. */
  body?: (i: number) => Buffer | undefined
  /** Pause between a client's requests (its connection idles meanwhile). */
  gapMs?: number
  responseTimeoutMs?: number
  /** Pause before dialling again after a refused connect. */
  redialMs?: number
}

export type RequestResult =
  /** Status 200 and the Machine's JSON for this very token, every byte of the announced length. */
  | 'ok'
  /** A complete response, but not the right one (status or body). */
  | 'wrong'
  /** The request was written, the connection ended cleanly (FIN) before any byte of an answer. */
  | 'unanswered'
  /** Part of a response, then the connection ended. */
  | 'truncated'
  /** The connection was reset while this request was outstanding. */
  | 'reset'
  | 'timeout'

export interface RequestRecord {
  token: string
  path: string
  conn: number
  sentAt: number
  endedAt: number
  result: RequestResult
  status?: number
  /** The response said `Connection: close`. */
  connectionClose: boolean
  /** The first request on its connection (a request on a reused connection is not). */
  firstOnConn: boolean
  bytes: number
  error?: string
}

export interface ConnRecord {
  id: number
  startedAt: number
  /** The error code when the connect itself failed (no connection was made). */
  refused?: string
  /** How the connection ended once made. */
  end?: 'client-after-close-header' | 'server-while-idle' | 'server-with-request-outstanding' | 'reset-while-idle' | 'reset-with-request-outstanding' | 'client-stopped'
  endedAt?: number
}

export interface KeepAliveClients {
  readonly requests: RequestRecord[]
  readonly conns: ConnRecord[]
  stop(): Promise<void>
}

export function startKeepAliveClients(init: KeepAliveInit): KeepAliveClients {
  const requests: RequestRecord[] = []
  const conns: ConnRecord[] = []
  let running = true
  let n = 0
  const loop = async (): Promise<void> => {
    while (running) {
      const c = new Conn(conns.length, init)
      conns.push(c.record)
      if (!await c.open()) {
        await new Promise((r) => setTimeout(r, init.redialMs ?? 50))
        continue
      }
      let first = true
      while (running) {
        if (c.serverEnded) { c.endIdle(); break }
        const i = n++
        const rec = await c.exchange(init.path(i), init.body?.(i), first)
        first = false
        requests.push(rec)
        if (rec.result !== 'ok' && rec.result !== 'wrong') break
        if (rec.connectionClose) { c.closeAfterCloseHeader(); break }
        if (init.gapMs !== undefined) await new Promise((r) => setTimeout(r, init.gapMs))
      }
      if (!running) c.stopByClient()
    }
  }
  const loops = Array.from({ length: init.clients }, () => loop())
  let stopped: Promise<void> | undefined
  return {
    requests,
    conns,
    stop() {
      running = false
      stopped ??= Promise.all(loops).then(() => undefined)
      return stopped
    },
  }
}

class Conn {
  readonly record: ConnRecord
  private socket: Socket | undefined
  serverEnded = false
  private closed = false
  private resetCode: string | undefined
  private buf: Buffer = Buffer.alloc(0)
  private wake: (() => void) | undefined

  constructor(id: number, private readonly init: KeepAliveInit) {
    this.record = { id, startedAt: performance.now() }
  }

  async open(): Promise<boolean> {
    const s = connect({ host: this.init.host, port: this.init.port })
    s.setNoDelay(true)
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => { s.destroy(); this.record.refused = 'connect timeout'; resolve(false) }, 10_000)
      s.once('connect', () => { clearTimeout(timer); resolve(true) })
      s.once('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); this.record.refused = err.code ?? err.message; resolve(false) })
    })
    if (!ok) { s.destroy(); return false }
    this.socket = s
    s.on('data', (d: Buffer) => { this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]); this.poke() })
    s.on('end', () => { this.serverEnded = true; this.poke() })
    s.on('error', (err: NodeJS.ErrnoException) => { this.resetCode = err.code ?? err.message; this.poke() })
    s.on('close', () => { this.closed = true; this.poke() })
    return true
  }

  private poke(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  async exchange(path: string, body: Buffer | undefined, firstOnConn: boolean): Promise<RequestRecord> {
    const token = randomUUID()
    const rec: RequestRecord = { token, path, conn: this.record.id, sentAt: performance.now(), endedAt: 0, result: 'timeout', connectionClose: false, firstOnConn, bytes: 0 }
    const s = this.socket!
    this.buf = Buffer.alloc(0)
    const head = body === undefined
      ? `GET ${path} HTTP/1.1\r\nhost: ${this.init.hostHeader}\r\nx-token: ${token}\r\n\r\n`
      : `POST ${path} HTTP/1.1\r\nhost: ${this.init.hostHeader}\r\nx-token: ${token}\r\ncontent-length: ${body.length}\r\n\r\n`
    s.write(body === undefined ? head : Buffer.concat([Buffer.from(head, 'latin1'), body]))
    const deadline = performance.now() + (this.init.responseTimeoutMs ?? 30_000)
    for (;;) {
      const parsed = parseResponse(this.buf)
      rec.bytes = this.buf.length
      if (parsed !== undefined) {
        rec.status = parsed.status
        rec.connectionClose = parsed.connectionClose
        let answer: { token?: string; path?: string; bytes?: number } | undefined
        try { answer = JSON.parse(parsed.body.toString('utf8')) as typeof answer } catch { /* not JSON: wrong below */ }
        const right = answer?.token === token && answer.path === path && answer.bytes === (body?.length ?? 0)
        rec.result = parsed.status === 200 && right ? 'ok' : 'wrong'
        if (rec.result === 'wrong') rec.error = `${parsed.status} ${parsed.body.toString('utf8').slice(0, 200)}`
        break
      }
      if (this.resetCode !== undefined) { rec.result = 'reset'; rec.error = this.resetCode; this.end('reset-with-request-outstanding'); break }
      if (this.serverEnded || this.closed) { rec.result = this.buf.length === 0 ? 'unanswered' : 'truncated'; this.end('server-with-request-outstanding'); break }
      const left = deadline - performance.now()
      if (left <= 0) { this.end('client-stopped'); break }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.wake = () => { clearTimeout(timer); resolve() }
      })
    }
    rec.endedAt = performance.now()
    return rec
  }

  /** The server ended the connection while no request was outstanding. */
  endIdle(): void {
    this.end(this.resetCode === undefined ? 'server-while-idle' : 'reset-while-idle')
  }

  closeAfterCloseHeader(): void { this.end('client-after-close-header') }

  stopByClient(): void { if (this.record.end === undefined) this.end('client-stopped') }

  private end(how: NonNullable<ConnRecord['end']>): void {
    if (this.record.end !== undefined) return
    this.record.end = how
    this.record.endedAt = performance.now()
    this.socket?.end()
    this.socket?.destroy()
  }
}

/** A whole response with a Content-Length body, or undefined while incomplete. */
function parseResponse(buf: Buffer): { status: number; connectionClose: boolean; body: Buffer } | undefined {
  const headEnd = buf.indexOf('\r\n\r\n')
  if (headEnd === -1) return undefined
  const lines = buf.subarray(0, headEnd).toString('latin1').split('\r\n')
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0])?.[1] ?? NaN)
  let length = -1
  let connectionClose = false
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':')
    const name = line.slice(0, i).trim().toLowerCase()
    const value = line.slice(i + 1).trim()
    if (name === 'content-length') length = Number(value)
    if (name === 'connection' && value.toLowerCase().split(',').some((t) => t.trim() === 'close')) connectionClose = true
    if (name === 'transfer-encoding') throw new Error(`unexpected transfer-encoding ${value}: the Machine sends Content-Length`)
  }
  if (length < 0) throw new Error(`a response without Content-Length: ${lines[0]}`)
  if (buf.length < headEnd + 4 + length) return undefined
  return { status, connectionClose, body: buf.subarray(headEnd + 4, headEnd + 4 + length) }
}
