import { readFileSync } from 'node:fs'
import { request } from 'undici'
import { EdgeProxyError, type ErrorCode, ERROR_TABLE } from '../../schemas/errors.js'

export const DEFAULT_API = 'http://127.0.0.1:4280'
const TIMEOUT_MS = 10_000

export interface ApiOptions {
  api?: string
  tokenFile?: string
}

/** The CLI's only way to a node: its admin API. Errors come back as EdgeProxyError with the node's code. */
export class ApiClient {
  readonly base: string
  private readonly headers: Record<string, string>

  constructor(options: ApiOptions) {
    this.base = (options.api ?? process.env.EDGEPROXY_API ?? DEFAULT_API).replace(/\/$/, '')
    const tokenFile = options.tokenFile ?? process.env.EDGEPROXY_TOKEN_FILE
    this.headers = tokenFile === undefined ? {} : { authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` }
  }

  async call<T>(method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, body?: { text: string; type: string } | unknown): Promise<T> {
    const res = await this.send(method, path, body)
    const text = await res.body.text()
    const parsed = text === '' ? undefined : safeJson(text)
    if (res.statusCode >= 400) throw toError(res.statusCode, parsed, text)
    return parsed as T
  }

  /** A streamed answer (events, logs), as an async iterable of text chunks. */
  async stream(path: string, signal?: AbortSignal): Promise<AsyncIterable<Buffer>> {
    const res = await this.send('GET', path, undefined, { signal, bodyTimeout: 0 })
    if (res.statusCode >= 400) {
      const text = await res.body.text()
      throw toError(res.statusCode, safeJson(text), text)
    }
    return res.body
  }

  private async send(method: string, path: string, body: unknown, extra: { signal?: AbortSignal; bodyTimeout?: number } = {}) {
    const url = `${this.base}${path}`
    let payload: string | undefined
    const headers = { ...this.headers }
    if (body !== undefined) {
      if (typeof body === 'object' && body !== null && 'text' in body && 'type' in body) {
        payload = (body as { text: string }).text
        headers['content-type'] = (body as { type: string }).type
      } else {
        payload = JSON.stringify(body)
        headers['content-type'] = 'application/json'
      }
    }
    try {
      return await request(url, { method: method as 'GET', headers, body: payload, headersTimeout: TIMEOUT_MS, bodyTimeout: extra.bodyTimeout ?? TIMEOUT_MS, signal: extra.signal })
    } catch (err) {
      const code = (err as { code?: string }).code ?? (err as Error).message
      throw new EdgeProxyError('EP_INTERNAL', `cannot reach the edgeproxy admin API at ${this.base} (${code}); is the node running? Start one with \`edgeproxy dev\`, or pass --api URL`, { cause: err })
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function toError(status: number, parsed: unknown, text: string): EdgeProxyError {
  const body = parsed as { code?: string; message?: string; path?: string } | undefined
  const code = body?.code !== undefined && body.code in ERROR_TABLE ? (body.code as ErrorCode) : status === 401 ? 'EP_UNAUTHORIZED' : status === 404 ? 'EP_NOT_FOUND' : 'EP_INTERNAL'
  return new EdgeProxyError(code, body?.message ?? (text.trim() || `HTTP ${status}`), { path: body?.path })
}
