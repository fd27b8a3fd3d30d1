import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { echoHandler, type Harness, httpApp, machineAddress, startHarness, type TestMachine } from '../../test/harness.js'
import { type Echo, PER_REQUEST, regionApp, replaysOnce, replayWith, srcFields } from './replay-apps.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

const toIad = replaysOnce(() => 'region=iad')

test('JSON form: the body is the directive, transform rewrites path and headers, and it works chunked too', async () => {
  h = await startHarness()
  const directive = JSON.stringify({
    region: ['iad'], state: 'json-state',
    transform: { path: '/rewritten?x=1', delete_headers: ['x-drop'], set_headers: [{ name: 'x-set', value: 'new' }, { name: 'X-Keep', value: 'replaced' }] },
  })
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], (req, res, m) => {
    if (req.headers['fly-replay-src'] !== undefined || m.record?.region !== 'ams') { echoHandler(req, res, m); return }
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/vnd.fly.replay+json; charset=utf-8' })
      if (req.url === '/chunked') { res.write(directive.slice(0, 10)); setImmediate(() => res.end(directive.slice(10))) } // no length: chunked
      else res.end(directive)
    })
  })
  for (const path of ['/plain', '/chunked']) {
    const res = await request(h.url(80, path), { headers: { host: 'web.localhost', 'x-drop': 'gone', 'x-keep': 'original', 'x-other': 'stays' } })
    const body = await res.body.json() as Echo
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('application/json')
    expect(body.machine).toBe(byName.iad.addr)
    expect(body.url).toBe('/rewritten?x=1')
    expect(body.headers['x-drop']).toBeUndefined()
    expect(body.headers['x-set']).toBe('new')
    expect(body.headers['x-keep']).toBe('replaced')
    expect(body.headers['x-other']).toBe('stays')
    expect(srcFields(body.headers['fly-replay-src']).state).toBe('json-state')
  }
})

test('a JSON directive that is not JSON, or not an object, is a 502 EP_REPLAY_INVALID', async () => {
  h = await startHarness()
  await regionApp(h, 'web', ['ams'], (req, res) => {
    res.writeHead(200, { 'content-type': 'application/vnd.fly.replay+json' })
    res.end(req.url === '/array' ? '["iad"]' : '{region:')
  })
  for (const [path, text] of [['/bad', 'is not JSON'], ['/array', 'must be a JSON object']]) {
    const res = await request(h.url(80, path), { headers: { host: 'web.localhost' } })
    expect(res.statusCode).toBe(502)
    expect(res.headers['edgeproxy-error']).toBe('EP_REPLAY_INVALID')
    expect(await res.body.text()).toContain(text)
  }
})

test('a POST body is replayed whole: streamed with a length, and chunked', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], toIad)
  const payload = randomBytes(3 * 1024 * 1024).toString('base64') // ~4 MiB, far more than one write
  const withLength = await request(h.url(80, '/upload'), { method: 'POST', body: payload, headers: { host: 'web.localhost', 'content-type': 'text/plain' } })
  const a = await withLength.body.json() as Echo
  expect(withLength.statusCode).toBe(200)
  expect(a.machine).toBe(byName.iad.addr)
  expect(a.method).toBe('POST')
  expect(a.body.length).toBe(payload.length)
  expect(a.body === payload).toBe(true)

  const parts = ['first,', 'second,', 'third']
  const chunked = await request(h.url(80, '/upload'), { method: 'PUT', body: Readable.from(parts.map((p) => Buffer.from(p))), headers: { host: 'web.localhost' } })
  const b = await chunked.body.json() as Echo
  expect(b.machine).toBe(byName.iad.addr)
  expect(b.headers['transfer-encoding']).toBe('chunked')
  expect(b.body).toBe(parts.join(''))
  expect(byName.ams.requests.map((r) => r.method)).toEqual(['POST', 'PUT'])
})

test('a Machine that answers fly-replay before reading the body: the rest is read and the whole body replayed', async () => {
  h = await startHarness({ limits: { maxReplayBodyBytes: 32 * 1024 * 1024 } })
  // the source answers as soon as it has the request head and reads nothing more: a body larger than the
  // socket buffers cannot have reached it, so the proxy must read the rest from the client itself
  let received = 0
  const src = await h.tcpMachines(1, (s: Socket) => {
    s.once('data', (d: Buffer) => {
      received += d.length
      s.pause()
      s.write('HTTP/1.1 307 Temporary Redirect\r\nfly-replay: region=iad\r\nContent-Length: 0\r\n\r\n')
    })
    s.on('error', () => { /* the proxy drops the connection: it is out of step */ })
  })
  const iad = await sharePort(h, src.port)
  await h.deploy(httpApp('web', src.port, PER_REQUEST))
  await h.addMachine('web', src.machines[0], { region: 'ams' })
  await h.addMachine('web', iad, { region: 'iad' })

  const payload = 'x'.repeat(24 * 1024 * 1024)
  const res = await request(h.url(80, '/early'), { method: 'POST', body: payload, headers: { host: 'web.localhost' } })
  const body = await res.body.json() as Echo
  expect(res.statusCode).toBe(200)
  expect(body.machine).toBe(iad.addr)
  expect(body.body.length).toBe(payload.length)
  expect(srcFields(body.headers['fly-replay-src']).instance).toBe(src.machines[0].record!.id)
  expect(received).toBeLessThan(1024 * 1024)
})

test('a body over the replay buffer cannot be replayed: 413 EP_REPLAY_BODY_TOO_LARGE with the next step; under it works', async () => {
  h = await startHarness({ limits: { maxReplayBodyBytes: 64 * 1024 } })
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], toIad)
  const small = await request(h.url(80, '/'), { method: 'POST', body: 'y'.repeat(64 * 1024), headers: { host: 'web.localhost' } })
  expect(small.statusCode).toBe(200)
  expect((await small.body.json() as Echo).machine).toBe(byName.iad.addr)

  const big = await request(h.url(80, '/'), { method: 'POST', body: 'y'.repeat(64 * 1024 + 1), headers: { host: 'web.localhost' } })
  const text = await big.body.text()
  expect(big.statusCode).toBe(413)
  expect(big.headers['edgeproxy-error']).toBe('EP_REPLAY_BODY_TOO_LARGE')
  expect(text).toContain('larger than the 64 KiB replay buffer')
  expect(text).toContain('--replay-body-limit')
  expect(byName.iad.requests).toHaveLength(1) // only the small one
})

test('the default replay buffer is 10 MiB', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], toIad)
  const res = await request(h.url(80, '/'), { method: 'POST', body: Buffer.alloc(10 * 1024 * 1024 + 1, 0x61), headers: { host: 'web.localhost' } })
  const text = await res.body.text()
  expect(res.statusCode).toBe(413)
  expect(text).toContain('larger than the 10 MiB replay buffer')
  expect(byName.iad.requests).toHaveLength(0)
})

test('chained replays stop at 10: the 11th fly-replay is 508 EP_REPLAY_LOOP', async () => {
  h = await startHarness()
  let seen = 0
  await regionApp(h, 'web', ['ams'], (req, res) => {
    seen++
    req.resume()
    req.on('end', () => replayWith(res, `state=hop${seen}`)) // always asks again: a loop
  })
  const res = await request(h.url(80, '/'), { headers: { host: 'web.localhost' } })
  const text = await res.body.text()
  expect(res.statusCode).toBe(508)
  expect(res.headers['edgeproxy-error']).toBe('EP_REPLAY_LOOP')
  expect(text).toContain('more than 10 chained replays')
  expect(seen).toBe(11) // the first answer and 10 replays
})

/** An echo Machine on its own loopback address, on the same internal port as the app's other Machines. */
async function sharePort(h: Harness, port: number): Promise<TestMachine> {
  const m: TestMachine = { addr: machineAddress(), server: undefined as unknown as Server, requests: [] }
  m.server = createServer((req, res) => { m.requests.push(req); echoHandler(req, res, m) })
  m.server.listen(port, m.addr)
  await once(m.server, 'listening')
  h.machines.push(m)
  return m
}
