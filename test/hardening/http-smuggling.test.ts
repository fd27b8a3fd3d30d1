import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { startHarness, type Harness, type TestMachine } from '../../proxy/test/harness.js'
import { RawConnection, rawExchange } from '../../proxy/test/raw-client.js'
import { rawH2Request } from './helpers/raw-h2.js'

/**
 * Issue 11 items 6 and 7 beyond proxy/test/hostile-clients.test.ts: a corpus of request-smuggling vectors
 * from the published research (CL.TE, TE.CL, TE.TE obfuscations, duplicate and malformed lengths, obs-fold,
 * chunk-size tricks, hop-by-hop abuse, CR/LF/NUL injection, HTTP/2 → HTTP/1.1 downgrade), sent as raw bytes
 * and raw h2 frames; the lengths that are accepted must reach the Machine exactly as the proxy framed them.
 * Then the size limits at and past their boundaries, the new request-body limit included.
 *
 * The Machine is node:http (llhttp, a strict parser) with a tap on its sockets: every byte it receives is
 * kept, so a test can say that a smuggled request never reached it — not just that the client saw a 400.
 */
const BODY_LIMIT = 1024 * 1024
let h: Harness
const tap: Buffer[] = []
const seenByMachine = (): string => Buffer.concat(tap).toString('latin1')

beforeAll(async () => {
  h = await startHarness({ limits: { maxRequestBodyBytes: BODY_LIMIT }, timeouts: { headersMs: 5000, idleMs: 10_000 } })
  const { port, machines } = await h.customMachines(1, (m: TestMachine) => {
    const server: Server = createServer((req, res) => {
      m.requests.push(req)
      let bytes = 0
      // /early answers before reading the body, and streams its answer slowly
      if (req.url === '/early') {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('started')
        const t = setInterval(() => res.write('.'), 50)
        req.on('close', () => clearInterval(t))
        req.resume()
        return
      }
      req.on('data', (c: Buffer) => { bytes += c.length })
      req.on('end', () => {
        const body = JSON.stringify({ url: req.url, bytes, te: req.headers['transfer-encoding'], cl: req.headers['content-length'] })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      })
    })
    server.on('connection', (s) => s.on('data', (c: Buffer) => tap.push(c)))
    server.keepAliveTimeout = 5000
    return server
  })
  await h.deploy(`app = "web"\n[http_service]\ninternal_port = ${port}\n[http_service.concurrency]\ntype = "requests"\nsoft_limit = 100\n`)
  await h.addMachine('web', machines[0])
}, 60_000)

afterAll(async () => { await h?.stop() })

const H = 'Host: web.localhost\r\n'
const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: web.localhost\r\n\r\n'

/**
 * Each vector, alone on a fresh connection: 400 with the error code, `Connection: close`, the connection
 * closed by the proxy, and no trace of the smuggled request at the Machine.
 */
describe('smuggling vectors: 400, the connection closed, the smuggled request never reaches the Machine', () => {
  const vectors: Array<[string, string]> = [
    // CL.TE and TE.CL, with the usual obfuscations of Transfer-Encoding
    ['TE.CL, Transfer-Encoding first', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n${SMUGGLED}\r\n0\r\n\r\n`],
    ['CL.TE with a tab before chunked', `POST / HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\nG${SMUGGLED}`],
    ['TE: xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['TE: chunked, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['TE: identity, chunked (a coding before chunked)', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['two Transfer-Encoding headers', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['TE with a vertical tab', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['TE folded onto a second line', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['a header line starting with a space right after the request line', `POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n${H}Content-Length: 4\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['Transfer-Encoding in HTTP/1.0', `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['TE with a bare LF in the header block', `POST / HTTP/1.1\r\n${H}X: y\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    // lengths
    ['Content-Length twice with the same value', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello${SMUGGLED}`],
    ['Content-Length as a list', `POST / HTTP/1.1\r\n${H}Content-Length: 5, 47\r\n\r\nhello${SMUGGLED}`],
    ['Content-Length with a plus sign', `POST / HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello${SMUGGLED}`],
    ['negative Content-Length', `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n${SMUGGLED}`],
    ['Content-Length with a space inside', `POST / HTTP/1.1\r\n${H}Content-Length: 5 47\r\n\r\nhello${SMUGGLED}`],
    ['a 20-digit Content-Length', `POST / HTTP/1.1\r\n${H}Content-Length: 18446744073709551621\r\n\r\nhello${SMUGGLED}`],
    // hop-by-hop abuse: dropping a header the client named in Connection must not unframe the body
    ['Connection: content-length', `POST / HTTP/1.1\r\n${H}Content-Length: ${SMUGGLED.length}\r\nConnection: content-length\r\n\r\n${SMUGGLED}`],
    ['Connection: transfer-encoding', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: keep-alive, Transfer-Encoding\r\n\r\n${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`],
    ['Connection: host', `GET / HTTP/1.1\r\n${H}Connection: host\r\n\r\n`],
    // chunk sizes
    ['chunk size with 0x', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['negative chunk size', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['chunk size with a space before the CRLF', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['chunk size line ending in a bare LF', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['more chunk data than its size', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['a chunk size that overflows 64 bits', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1000000000000000005\r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['NUL in a chunk extension', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;a=\x00b\r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
    ['a trailer line that is a request line', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n${SMUGGLED}`],
    ['a control character in a trailer', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\x0bb\r\n\r\n${SMUGGLED}`],
    ['Content-Length with a form feed before it', `POST / HTTP/1.1\r\n${H}Content-Length:\x0c5\r\n\r\nhello${SMUGGLED}`],
    // injection into the head
    ['NUL in a header value', `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`],
    ['a bare CR in a header value', `GET / HTTP/1.1\r\n${H}X-A: a\rGET /smuggled HTTP/1.1\r\n\r\n`],
    ['a space inside a header name', `GET / HTTP/1.1\r\n${H}Content Length: 5\r\n\r\nhello`],
    ['Host folded onto a second line', `GET / HTTP/1.1\r\nHost: web.localhost\r\n\tsmuggled.example\r\n\r\n`],
    ['two Host headers', `GET / HTTP/1.1\r\n${H}Host: smuggled.example\r\n\r\n`],
    ['an HTTP/0.9 request line', 'GET /smuggled\r\n\r\n'],
    ['a request line with a trailing space', `GET /smuggled HTTP/1.1 \r\n${H}\r\n`],
  ]

  test.each(vectors)('%s', async (_name, raw) => {
    const before = tap.length
    const text = await rawExchange(h.port(80), raw, { timeoutMs: 5000 })
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/)
    expect(text).toContain('edgeproxy-error: EP_BAD_REQUEST\r\n')
    expect(text).toContain('Connection: close\r\n')
    expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1) // one answer, for one request
    expect(Buffer.concat(tap.slice(before)).toString('latin1')).not.toContain('smuggled')
  })
})

describe('lengths the proxy accepts reach the Machine framed exactly as the proxy read them', () => {
  test.each([
    ['Transfer-Encoding: CHUNKED (codings are case-insensitive)', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, 5],
    ['a tab before chunked', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, 5],
    ['Content-Length with leading zeros', `POST /a HTTP/1.1\r\n${H}Content-Length: 0005\r\n\r\nhello`, 5],
    ['chunk extensions and trailers', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;name=val\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n`, 8],
  ])('%s', async (_name, raw, bytes) => {
    // the request, then a pipelined GET: if the framing were read differently the second would be body, or vice versa
    const conn = await RawConnection.open(h.port(80))
    try {
      conn.write(`${raw}GET /after HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)
      const text = await conn.until(() => false, 5000).catch(() => conn.received)
      const bodies = [...text.matchAll(/\{[^}]*\}/g)].map((m) => JSON.parse(m[0]) as { url: string; bytes: number })
      expect(bodies).toEqual([{ url: '/a', bytes }, { url: '/after', bytes: 0 }].map((b) => expect.objectContaining(b)))
    } finally {
      conn.close()
    }
  })
})

describe('HTTP/2 requests that cannot be downgraded to HTTP/1.1 safely are refused, never forwarded', () => {
  const base: Array<[string, string]> = [[':method', 'POST'], [':scheme', 'https'], [':authority', 'web.localhost'], [':path', '/h2']]
  test.each<[string, Array<[string, string]>, Buffer | undefined]>([
    ['transfer-encoding: chunked', [...base, ['transfer-encoding', 'chunked']], Buffer.from(`0\r\n\r\n${SMUGGLED}`)],
    ['connection: keep-alive', [...base, ['connection', 'keep-alive']], undefined],
    ['CRLF inside :path', [[':method', 'GET'], [':scheme', 'https'], [':authority', 'web.localhost'], [':path', `/ HTTP/1.1\r\n\r\n${SMUGGLED}`]], undefined],
    ['an upper-case header name', [...base, ['X-Upper', '1']], undefined],
    ['content-length: 0 with a body that is a request', [...base, ['content-length', '0']], Buffer.from(SMUGGLED)],
    ['content-length larger than the body', [...base, ['content-length', '100']], Buffer.from('hello')],
    ['te: gzip', [...base, ['te', 'gzip']], undefined],
  ])('%s: PROTOCOL_ERROR', async (_name, headers, data) => {
    const before = tap.length
    const r = await rawH2Request(h.port(443), 'web.localhost', headers, data)
    expect(r.answered).toBe(false)
    expect(r.resetCode ?? r.goawayCode).toBe(1) // PROTOCOL_ERROR
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(Buffer.concat(tap.slice(before)).toString('latin1')).not.toContain('smuggled')
  })

  test.each([['CRLF', `a\r\n\r\n${SMUGGLED}`], ['a bare LF', 'a\nb: c'], ['a bare CR', 'a\rb'], ['NUL', 'a\x00b'], ['a vertical tab', 'a\x0bb']])(
    'a header value with %s: the field never reaches the Machine', async (_name, value) => {
      const before = tap.length
      const r = await rawH2Request(h.port(443), 'web.localhost', [...base, ['x-inject', value]], undefined)
      const seen = Buffer.concat(tap.slice(before)).toString('latin1')
      // nghttp2 drops a field whose value breaks RFC 9113 §8.2.1; the rest of the request may be served
      if (r.answered) expect(seen).toMatch(/^POST \/h2 HTTP\/1\.1\r\n/)
      else expect(r.resetCode ?? r.goawayCode).toBe(1)
      expect(seen).not.toContain('x-inject')
      expect(seen.match(/HTTP\/1\.1\r\n/g)?.length ?? 0).toBeLessThanOrEqual(1)
    })
})

describe('size limits at and past their boundaries: 431, 414, 413', () => {
  test('ten thousand tiny headers make a head over 64 KiB: 431, nothing forwarded', async () => {
    const before = tap.length
    const text = await rawExchange(h.port(80), `GET / HTTP/1.1\r\n${H}${'a: b\r\n'.repeat(12_000)}\r\n`)
    expect(text).toMatch(/^HTTP\/1\.1 431 /)
    expect(tap.length).toBe(before)
  })

  test('a head over 64 KiB trickled in 200 small writes: 431 as soon as it is too long', async () => {
    const conn = await RawConnection.open(h.port(80))
    try {
      conn.write(`GET / HTTP/1.1\r\n${H}`)
      for (let i = 0; i < 200 && !conn.closed && conn.received === ''; i++) {
        conn.write(`X-Pad-${i}: ${'p'.repeat(500)}\r\n`)
        await new Promise((r) => setImmediate(r))
      }
      const text = await conn.until((t) => t.includes('\r\n\r\n'))
      expect(text).toMatch(/^HTTP\/1\.1 431 /)
    } finally {
      conn.close()
    }
  })

  test('a request target of exactly 8 KiB is served; one byte more is 414', async () => {
    const path = (n: number): string => `/${'a'.repeat(n - 1)}`
    const ok = await rawExchange(h.port(80), `GET ${path(8192)} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)
    expect(ok).toMatch(/^HTTP\/1\.1 200 /)
    const refused = await rawExchange(h.port(80), `GET ${path(8193)} HTTP/1.1\r\n${H}\r\n`)
    expect(refused).toMatch(/^HTTP\/1\.1 414 /)
    expect(refused).toContain('edgeproxy-error: EP_URI_TOO_LONG')
  })

  test('a body of exactly the limit is forwarded whole; a Content-Length one byte over is 413 before anything is forwarded', async () => {
    const ok = await rawExchange(h.port(80), [`POST /max HTTP/1.1\r\n${H}Content-Length: ${BODY_LIMIT}\r\nConnection: close\r\n\r\n`, Buffer.alloc(BODY_LIMIT, 0x61)], { timeoutMs: 10_000 })
    expect(ok).toMatch(/^HTTP\/1\.1 200 /)
    expect(ok).toContain(`"bytes":${BODY_LIMIT}`)
    const before = tap.length
    const over = await rawExchange(h.port(80), `POST /over HTTP/1.1\r\n${H}Content-Length: ${BODY_LIMIT + 1}\r\nExpect: 100-continue\r\n\r\n`)
    expect(over).toMatch(/^HTTP\/1\.1 413 /) // no 100 Continue first: the client never sends the body
    expect(over).toContain('edgeproxy-error: EP_BODY_TOO_LARGE')
    expect(over).toContain('Connection: close')
    expect(tap.length).toBe(before)
  })

  test('a chunked body that grows past the limit: the Machine\'s connection is cut mid-body, the client gets 413', async () => {
    const machineRequests = h.machines[0].requests.length
    const conn = await RawConnection.open(h.port(80))
    try {
      conn.write(`POST /stream HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`)
      const piece = Buffer.alloc(64 * 1024, 0x62)
      for (let sent = 0; sent <= BODY_LIMIT && !conn.closed && conn.received === ''; sent += piece.length) {
        conn.write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]))
        await new Promise((r) => setTimeout(r, 2))
      }
      const text = await conn.until((t) => t.includes('\r\n\r\n'), 5000)
      expect(text).toMatch(/^HTTP\/1\.1 413 /)
      await conn.until(() => false, 3000).catch(() => undefined)
      expect(conn.closed).toBe(true)
      // the Machine got the start of it, then its connection went away before the body ended: no answer was made
      expect(h.machines[0].requests.length).toBe(machineRequests + 1)
      const req = h.machines[0].requests.at(-1)!
      await waitClosed(req)
      expect(req.complete).toBe(false)
    } finally {
      conn.close()
    }
  })

  test('a chunk size line announcing more than the limit is 413 before any of its data', async () => {
    const text = await rawExchange(h.port(80), `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n`)
    expect(text).toMatch(/^HTTP\/1\.1 413 /)
  })

  test('once the response has started, a body past the limit cuts the connection', async () => {
    const conn = await RawConnection.open(h.port(80))
    try {
      conn.write(`POST /early HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`)
      await conn.until((t) => t.includes('started'))
      const piece = Buffer.alloc(64 * 1024, 0x63)
      for (let sent = 0; sent <= BODY_LIMIT + piece.length && !conn.closed; sent += piece.length) {
        conn.write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]))
        await new Promise((r) => setTimeout(r, 2))
      }
      await conn.until(() => false, 5000).catch(() => undefined)
      expect(conn.closed).toBe(true)
      expect(conn.received).toMatch(/^HTTP\/1\.1 200 /)
      expect(conn.received).not.toContain('0\r\n\r\n') // the chunked answer never ended: the client knows it was cut
    } finally {
      conn.close()
    }
  })

  test('HTTP/2: content-length over the limit is 413 at once; a body streaming past it gets 413, then a reset that stops the upload', async () => {
    const session = h2connect(`https://127.0.0.1:${h.port(443)}`, { rejectUnauthorized: false, servername: 'web.localhost' })
    session.on('error', () => { /* the reset below is part of the test */ })
    try {
      const declared = session.request({ ':method': 'POST', ':path': '/h2', ':authority': 'web.localhost', 'content-length': String(BODY_LIMIT + 1) })
      declared.on('error', () => { /* the stream may be reset after the answer */ })
      const [head] = await once(declared, 'response') as [Record<string, string>]
      expect(head[':status']).toBe(413)
      expect(head['edgeproxy-error']).toBe('EP_BODY_TOO_LARGE')
      declared.destroy()

      const streamed = session.request({ ':method': 'POST', ':path': '/h2', ':authority': 'web.localhost' })
      streamed.on('error', () => { /* the CANCEL reset after the answer */ })
      const answer = once(streamed, 'response') as Promise<[Record<string, string>]>
      const closed = once(streamed, 'close')
      const piece = Buffer.alloc(64 * 1024, 0x64)
      let sent = 0
      for (; sent <= 4 * BODY_LIMIT && !streamed.closed && !streamed.destroyed; sent += piece.length) {
        if (!streamed.write(piece)) await Promise.race([once(streamed, 'drain'), closed])
      }
      const [res] = await answer
      expect(res[':status']).toBe(413)
      await closed
      expect(streamed.rstCode).toBe(0x8)
      expect(sent).toBeLessThan(2 * BODY_LIMIT) // the upload was stopped, not drained to its end
    } finally {
      session.destroy()
    }
  })

  test('the default limit is 1 GiB: a Content-Length of 1 GiB + 1 is 413 without a byte of body', async () => {
    const d = await startHarness()
    try {
      const { port, machines } = await d.httpMachines(1)
      await d.deploy(`app = "web"\n[[services]]\ninternal_port = ${port}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`)
      await d.addMachine('web', machines[0])
      const text = await rawExchange(d.port(80), `PUT /big HTTP/1.1\r\n${H}Content-Length: ${1024 ** 3 + 1}\r\n\r\n`)
      expect(text).toMatch(/^HTTP\/1\.1 413 /)
      expect(text).toContain('1 GiB limit')
      expect(machines[0].requests).toHaveLength(0)
    } finally {
      await d.stop()
    }
  })
})

async function waitClosed(req: { closed?: boolean; once(e: 'close', f: () => void): unknown }): Promise<void> {
  if (req.closed === true) return
  await Promise.race([new Promise<void>((r) => { req.once('close', () => r()) }), new Promise((r) => setTimeout(r, 3000))])
}
