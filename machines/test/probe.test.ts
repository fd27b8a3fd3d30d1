import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { createServer as createTcpServer, type AddressInfo } from 'node:net'
import { afterEach, expect, test } from 'vitest'
import { type HttpProbe, probeHttp, probeTcp } from '../health/probe.js'

const servers: Array<{ close(cb: () => void): void }> = []
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()))
})

async function httpServer(handler: Parameters<typeof createServer>[1]): Promise<number> {
  const server: Server = createServer(handler)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  servers.push({ close: (cb) => { server.closeAllConnections(); server.close(cb) } })
  return (server.address() as AddressInfo).port
}

const target = (port: number, extra: Partial<HttpProbe> = {}): HttpProbe => ({
  kind: 'http', host: '127.0.0.1', port, timeoutMs: 1000, method: 'GET', path: '/healthz', protocol: 'http',
  tlsSkipVerify: false, headers: {}, ...extra,
})

test('only 2xx passes an http check', async () => {
  let status = 204
  const port = await httpServer((_req, res) => { res.writeHead(status).end() })
  expect(await probeHttp(target(port))).toEqual({ ok: true, detail: 'HTTP 204' })
  status = 500
  expect(await probeHttp(target(port))).toEqual({ ok: false, detail: 'HTTP 500' })
  status = 404
  expect((await probeHttp(target(port))).ok).toBe(false)
})

test('a redirect is not followed and fails the check, naming where it pointed', async () => {
  let followed = false
  const port = await httpServer((req, res) => {
    if (req.url === '/elsewhere') { followed = true; res.writeHead(200).end() } else res.writeHead(302, { location: '/elsewhere' }).end()
  })
  expect(await probeHttp(target(port))).toEqual({ ok: false, detail: 'HTTP 302 (redirect to /elsewhere; checks do not follow redirects)' })
  expect(followed).toBe(false)
})

test('an http check sends its method, path and headers to the private address', async () => {
  let seen: { method?: string; url?: string; headers?: IncomingHttpHeaders } = {}
  const port = await httpServer((req, res) => { seen = { method: req.method, url: req.url, headers: req.headers }; res.writeHead(200).end() })
  await probeHttp(target(port, { method: 'HEAD', path: '/ready?deep=1', headers: { 'X-Check': ['a', 'b'], 'x-forwarded-proto': ['https'] } }))
  expect(seen.method).toBe('HEAD')
  expect(seen.url).toBe('/ready?deep=1')
  expect(seen.headers).toMatchObject({ 'x-check': 'a, b', 'x-forwarded-proto': 'https', host: `127.0.0.1:${port}` })
})

test('a check that gets no answer within its timeout fails', async () => {
  const port = await httpServer(() => { /* never answers */ })
  const began = Date.now()
  expect(await probeHttp(target(port, { timeoutMs: 200 }))).toEqual({ ok: false, detail: 'timed out after 200 ms' })
  expect(Date.now() - began).toBeGreaterThanOrEqual(190)
})

test('a tcp check passes when the port accepts and fails when it refuses', async () => {
  const server = createTcpServer((s) => s.destroy())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  expect(await probeTcp({ host: '127.0.0.1', port, timeoutMs: 1000 })).toEqual({ ok: true, detail: 'connected' })
  await new Promise<void>((r) => server.close(() => r()))
  expect(await probeTcp({ host: '127.0.0.1', port, timeoutMs: 1000 })).toEqual({ ok: false, detail: 'ECONNREFUSED' })
})
