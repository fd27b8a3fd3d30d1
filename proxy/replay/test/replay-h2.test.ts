import { once } from 'node:events'
import { type ClientHttp2Session, connect } from 'node:http2'
import { afterEach, expect, test } from 'vitest'
import { echoHandler, type Harness, type MachineHandler, startHarness, type TestMachine } from '../../test/harness.js'
import { type Echo, replaysOnce, srcFields } from './replay-apps.js'

let h: Harness | undefined
let client: ClientHttp2Session | undefined
afterEach(async () => {
  client?.close()
  client = undefined
  await h?.stop()
  h = undefined
})

/** `web` as `fly launch` writes it (port 80, and 443 with tls + http): ams answers with x-replay's fly-replay. */
async function webApp(init: Parameters<typeof startHarness>[0] = {}, handler: MachineHandler = replaysOnce((req) => req.headers['x-replay'] as string | undefined)): Promise<Record<string, TestMachine>> {
  h = await startHarness(init)
  const { port, machines } = await h.httpMachines(2, handler)
  await h.deploy(`app = "web"\n[http_service]\ninternal_port = ${port}\n[http_service.concurrency]\ntype = "requests"\nsoft_limit = 10\n`)
  await h.addMachine('web', machines[0], { region: 'ams' })
  await h.addMachine('web', machines[1], { region: 'iad' })
  client = connect(`https://127.0.0.1:${h.port(443)}`, { servername: 'web.localhost', rejectUnauthorized: false })
  client.on('error', () => { /* surfaces on the request */ })
  return { ams: machines[0], iad: machines[1] }
}

async function h2(path: string, headers: Record<string, string>, body?: Buffer[]): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const req = client!.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path, ':authority': 'web.localhost', ...headers }, { endStream: body === undefined })
  if (body !== undefined) {
    for (const part of body) if (!req.write(part)) await once(req, 'drain')
    req.end()
  }
  const [head] = await once(req, 'response') as [Record<string, unknown>]
  let text = ''
  req.setEncoding('utf8')
  for await (const chunk of req) text += chunk
  return { status: Number(head[':status']), headers: head, text }
}

test('HTTP/2 clients: the request is replayed to the region, with fly-replay-src, and no fly-replay header comes back', async () => {
  const m = await webApp()
  const res = await h2('/cart?x=1', { 'x-replay': 'region=iad;state=s2' })
  expect(res.status).toBe(200)
  const body = JSON.parse(res.text) as Echo
  expect(body.machine).toBe(m.iad.addr)
  expect(body.url).toBe('/cart?x=1')
  expect(srcFields(body.headers['fly-replay-src'])).toMatchObject({ instance: m.ams.record!.id, region: 'ams', state: 's2' })
  expect(body.headers['x-forwarded-proto']).toBe('https')
  expect(Object.keys(res.headers).filter((k) => k.startsWith('fly-replay'))).toEqual([])
})

test('HTTP/2 clients: a streamed body is replayed whole, and the JSON form transforms the request', async () => {
  const m = await webApp({}, (req, res, machine) => {
    if (req.headers['fly-replay-src'] !== undefined || machine.record?.region !== 'ams') { echoHandler(req, res, machine); return }
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/vnd.fly.replay+json' })
      res.end(JSON.stringify({ region: 'iad', transform: { path: '/moved', set_headers: [{ name: 'x-set', value: 'yes' }] } }))
    })
  })
  const parts = Array.from({ length: 8 }, (_, i) => Buffer.alloc(128 * 1024, 0x61 + i))
  const res = await h2('/upload', {}, parts)
  const body = JSON.parse(res.text) as Echo
  expect(res.status).toBe(200)
  expect(body.machine).toBe(m.iad.addr)
  expect(body.url).toBe('/moved')
  expect(body.headers['x-set']).toBe('yes')
  expect(body.body).toBe(Buffer.concat(parts).toString())
})

test('HTTP/2 clients: fallback with fly-replay-failed, and 413 for a body over the replay buffer', async () => {
  const m = await webApp({ limits: { maxReplayBodyBytes: 1024 } })
  const back = await h2('/', { 'x-replay': 'region=syd;fallback=force_self' })
  const body = JSON.parse(back.text) as Echo
  expect(body.machine).toBe(m.ams.addr)
  expect(srcFields(body.headers['fly-replay-failed'])).toMatchObject({ app: 'web', region: 'syd', reason: 'no_candidate', replay_source: m.ams.record!.id })

  const big = await h2('/', { 'x-replay': 'region=iad' }, [Buffer.alloc(2048, 0x62)])
  expect(big.status).toBe(413)
  expect(big.headers['edgeproxy-error']).toBe('EP_REPLAY_BODY_TOO_LARGE')
  expect(m.iad.requests).toHaveLength(0)
})
