import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { connect } from 'node:net'

export interface ProbeResult {
  ok: boolean
  /** Short text for logs and `machines ls`: `HTTP 503`, `ECONNREFUSED`, `timed out after 2000 ms`. */
  detail: string
}

export interface TcpProbe {
  kind: 'tcp'
  host: string
  port: number
  timeoutMs: number
}

export interface HttpProbe {
  kind: 'http'
  host: string
  port: number
  timeoutMs: number
  method: string
  path: string
  protocol: 'http' | 'https'
  tlsSkipVerify: boolean
  tlsServerName?: string
  headers: Record<string, string[]>
}

export type ProbeTarget = TcpProbe | HttpProbe

export type Probe = (target: ProbeTarget) => Promise<ProbeResult>

/** The connect must succeed within the timeout (FLY-SPEC §8). */
export function probeTcp(target: Pick<TcpProbe, 'host' | 'port' | 'timeoutMs'>): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port: target.port })
    const timer = setTimeout(() => done({ ok: false, detail: `timed out after ${target.timeoutMs} ms` }), target.timeoutMs)
    function done(result: ProbeResult): void {
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    socket.once('connect', () => done({ ok: true, detail: 'connected' }))
    socket.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }))
  })
}

/** Bodies are read and dropped; a health endpoint that streams forever still ends at the timeout. */
const MAX_BODY_BYTES = 64 * 1024

/**
 * Only 2xx passes and redirects are not followed (FLY-SPEC §8). The whole exchange, connect to last byte,
 * must fit in the timeout.
 */
export function probeHttp(target: HttpProbe): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const headers: OutgoingHttpHeaders = { 'user-agent': 'edgeproxy-health-check', connection: 'close' }
    for (const [name, values] of Object.entries(target.headers)) headers[name.toLowerCase()] = values.length === 1 ? values[0] : values
    const request = target.protocol === 'https' ? httpsRequest : httpRequest
    const req = request({
      host: target.host,
      port: target.port,
      method: target.method,
      path: target.path,
      headers,
      agent: false,
      ...(target.protocol === 'https' ? { rejectUnauthorized: !target.tlsSkipVerify, servername: target.tlsServerName } : {}),
    })
    let settled = false
    const timer = setTimeout(() => done({ ok: false, detail: `timed out after ${target.timeoutMs} ms` }), target.timeoutMs)
    function done(result: ProbeResult): void {
      if (settled) return
      settled = true
      clearTimeout(timer)
      req.destroy()
      resolve(result)
    }
    req.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }))
    req.once('response', (res) => {
      const status = res.statusCode ?? 0
      const ok = status >= 200 && status < 300
      const detail = `HTTP ${status}${redirectNote(status, res.headers)}`
      let seen = 0
      res.on('data', (chunk: Buffer) => {
        seen += chunk.length
        if (seen > MAX_BODY_BYTES) done({ ok, detail })
      })
      res.once('end', () => done({ ok, detail }))
      res.once('error', () => done({ ok, detail }))
      res.once('aborted', () => done({ ok, detail }))
    })
    req.end()
  })
}

function redirectNote(status: number, headers: IncomingHttpHeaders): string {
  if (status < 300 || status >= 400 || headers.location === undefined) return ''
  return ` (redirect to ${headers.location}; checks do not follow redirects)`
}

export const defaultProbe: Probe = (target) => (target.kind === 'tcp' ? probeTcp(target) : probeHttp(target))
