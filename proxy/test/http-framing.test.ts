import { createHash, randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { echoHandler, httpApp, startHarness, type Harness } from './harness.js'
import { countResponses, RawConnection, rawExchange } from './raw-client.js'

let h: Harness | undefined
let conn: RawConnection | undefined
afterEach(async () => {
  conn?.close()
  conn = undefined
  await h?.stop()
  h = undefined
})

async function oneMachine(handler = echoHandler): Promise<Harness> {
  const harness = await startHarness()
  const { port, machines } = await harness.httpMachines(1, handler)
  await harness.deploy(httpApp('web', port))
  await harness.addMachine('web', machines[0])
  return harness
}

test('a client that sends a request and then FIN still gets the whole response', async () => {
  h = await oneMachine()
  const text = await rawExchange(h.port(80), 'GET /half HTTP/1.1\r\nHost: web.localhost\r\n\r\n', { halfClose: true })
  expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
  expect(text).toContain('"url":"/half"')
  expect(text).toContain('Connection: close')
})

test('pipelined requests are answered one after another, in order', async () => {
  h = await oneMachine()
  const reqs = ['/one', '/two', '/three'].map((p) => `GET ${p} HTTP/1.1\r\nHost: web.localhost\r\n\r\n`).join('')
  conn = await RawConnection.open(h.port(80))
  conn.write(reqs)
  const text = await conn.until((t) => countResponses(t) === 3 && t.endsWith('}'))
  const order = [...text.matchAll(/"url":"(\/\w+)"/g)].map((m) => m[1])
  expect(order).toEqual(['/one', '/two', '/three'])
})

test('HTTP/1.0 without Host reaches the port\'s only app with Host added, and the connection closes', async () => {
  h = await oneMachine()
  const text = await rawExchange(h.port(80), 'GET /old HTTP/1.0\r\n\r\n')
  expect(text).toMatch(/^HTTP\/1\.1 200 OK/)
  expect(text).toContain('"host":"web.localhost"')
  expect(text).toContain('Connection: close')
})

test('a chunked response reaches an HTTP/1.0 client de-chunked and close-delimited', async () => {
  h = await oneMachine((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }) // no length: node sends chunked to HTTP/1.1
    res.write('hello ')
    res.end('world')
  })
  const text = await rawExchange(h.port(80), 'GET / HTTP/1.0\r\nHost: web.localhost\r\n\r\n')
  expect(text).not.toMatch(/transfer-encoding/i)
  expect(text.endsWith('\r\n\r\nhello world')).toBe(true)
})

test('HEAD, 204 and 304 responses carry no body and the connection stays usable', async () => {
  h = await oneMachine((req, res) => {
    if (req.url === '/204') { res.writeHead(204); res.end(); return }
    if (req.url === '/304') { res.writeHead(304, { etag: '"x"' }); res.end(); return }
    res.writeHead(200, { 'content-length': 5 })
    res.end(req.method === 'HEAD' ? undefined : 'hello')
  })
  conn = await RawConnection.open(h.port(80))
  for (const [method, path] of [['HEAD', '/'], ['GET', '/204'], ['GET', '/304'], ['GET', '/']]) {
    conn.write(`${method} ${path} HTTP/1.1\r\nHost: web.localhost\r\n\r\n`)
  }
  const text = await conn.until((t) => countResponses(t) === 4 && t.endsWith('hello'))
  expect(text.match(/HTTP\/1\.1 (\d{3})/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 204', 'HTTP/1.1 304', 'HTTP/1.1 200'])
  expect(text.split('hello').length - 1).toBe(1)
})

test('Expect: 100-continue gets the Machine\'s 100 before the body is sent', async () => {
  h = await oneMachine()
  conn = await RawConnection.open(h.port(80))
  conn.write('POST /upload HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n')
  await conn.until((t) => t.includes('HTTP/1.1 100 Continue\r\n\r\n'))
  conn.write('abcde')
  const text = await conn.until((t) => t.includes('"body":"abcde"'))
  expect(text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/)
})

test('large bodies stream both ways intact, Content-Length and chunked', async () => {
  h = await oneMachine((req, res) => {
    const hash = createHash('sha256')
    let n = 0
    req.on('data', (c: Buffer) => { hash.update(c); n += c.length })
    req.on('end', () => {
      const payload = randomBytes(3 * 1024 * 1024)
      res.writeHead(200, { 'x-got-sha': hash.digest('hex'), 'x-got-bytes': String(n), 'x-sent-sha': createHash('sha256').update(payload).digest('hex') })
      res.end(payload) // > 64 KiB written at once: chunked from node, flowing in many pieces
    })
  })
  const upload = randomBytes(5 * 1024 * 1024)
  const sha = createHash('sha256').update(upload).digest('hex')
  const withLength = await request(h.url(80), { method: 'POST', body: upload, headers: { host: 'web.localhost' } })
  const got1 = Buffer.from(await withLength.body.arrayBuffer())
  expect(withLength.headers['x-got-bytes']).toBe(String(upload.length))
  expect(withLength.headers['x-got-sha']).toBe(sha)
  expect(createHash('sha256').update(got1).digest('hex')).toBe(withLength.headers['x-sent-sha'])

  const pieces = Readable.from((function* () { for (let i = 0; i < upload.length; i += 100_000) yield upload.subarray(i, i + 100_000) })())
  const chunked = await request(h.url(80), { method: 'POST', body: pieces, headers: { host: 'web.localhost' } })
  const got2 = Buffer.from(await chunked.body.arrayBuffer())
  expect(chunked.headers['x-got-sha']).toBe(sha)
  expect(createHash('sha256').update(got2).digest('hex')).toBe(chunked.headers['x-sent-sha'])
})

test('a close-delimited response is passed on and the client connection closes after it', async () => {
  h = await startHarness()
  const { port, machines } = await h.tcpMachines(1, (s: Socket) => {
    s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end'))
  })
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])
  const text = await rawExchange(h.port(80), 'GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n')
  expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
  expect(text).toContain('Connection: close')
  expect(text.endsWith('\r\n\r\nuntil the end')).toBe(true)
})

test('bytes after a response make the Machine connection unusable: the next request gets a clean answer', async () => {
  h = await startHarness()
  let connections = 0
  const { port, machines } = await h.tcpMachines(1, (s: Socket) => {
    connections++
    s.on('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!'))
  })
  await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 10'))
  await h.addMachine('web', machines[0])
  for (let i = 0; i < 2; i++) {
    const res = await request(h.url(80), { headers: { host: 'web.localhost' } })
    expect(await res.body.text()).toBe('ok')
  }
  expect(connections).toBe(2)
})

test('a Machine that answers before reading the body: the client gets the answer, then the connection closes', async () => {
  h = await oneMachine((req, res) => {
    res.writeHead(413, { 'content-length': 8, connection: 'close' })
    res.end('too big\n')
  })
  conn = await RawConnection.open(h.port(80))
  conn.write('POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 10000000\r\n\r\n')
  conn.write(Buffer.alloc(16 * 1024, 0x61))
  const text = await conn.until(() => false, 5000).catch(() => conn!.received)
  expect(conn.closed).toBe(true)
  expect(text).toMatch(/^HTTP\/1\.1 413 /)
  expect(text).toContain('Connection: close')
})

test('keep-alive: many requests on one client connection reuse one Machine connection', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  let machineConnections = 0
  machines[0].server.on('connection', () => { machineConnections++ })
  await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 10'))
  await h.addMachine('web', machines[0])
  conn = await RawConnection.open(h.port(80))
  for (let i = 0; i < 20; i++) {
    conn.write(`GET /${i} HTTP/1.1\r\nHost: web.localhost\r\n\r\n`)
    await conn.until((t) => t.includes(`"url":"/${i}"`) && t.endsWith('}'))
  }
  expect(countResponses(conn.received)).toBe(20)
  expect(machineConnections).toBe(1)
})
