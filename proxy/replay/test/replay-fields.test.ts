import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { echoHandler, type Harness, type MachineHandler, startHarness } from '../../test/harness.js'
import { type Echo, regionApp, replaysOnce, srcFields } from './replay-apps.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

/** The source Machine (ams, the closest) answers with whatever fly-replay the client put in x-replay. */
const fromHeader = replaysOnce((req) => req.headers['x-replay'] as string | undefined)

async function get(path: string, replay: string, headers: Record<string, string> = {}) {
  const res = await request(h!.url(80, path), { headers: { host: 'web.localhost', 'x-replay': replay, ...headers } })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as Echo }
}

test('region: the request is served in the named region, with fly-replay-src naming where it came from', async () => {
  h = await startHarness()
  const iadHandler: MachineHandler = (req, res, m) => {
    // a target's own fly-replay-cache headers must not reach the client either
    res.setHeader('fly-replay-cache', '/cart/*')
    res.setHeader('Fly-Replay-Cache-Ttl-Secs', '30')
    echoHandler(req, res, m)
  }
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], (req, res, m) => (m.record?.region === 'iad' ? iadHandler : fromHeader)(req, res, m))
  const before = Date.now() * 1000

  const res = await get('/cart?id=7', 'region=iad', { 'x-custom': 'kept' })

  expect(res.status).toBe(200)
  const body = res.json()
  expect(body.machine).toBe(byName.iad.addr)
  expect(body.url).toBe('/cart?id=7')
  expect(body.headers['x-custom']).toBe('kept')
  expect(body.headers['fly-request-id']).toBe(res.headers['fly-request-id'])
  const src = srcFields(body.headers['fly-replay-src'])
  expect(src.instance).toBe(byName.ams.record!.id)
  expect(src.region).toBe('ams')
  expect(Number(src.t)).toBeGreaterThanOrEqual(before)
  expect(Number(src.t)).toBeLessThanOrEqual(Date.now() * 1000)
  expect(src.state).toBeUndefined()
  expect(Object.keys(res.headers).filter((k) => k.startsWith('fly-replay'))).toEqual([])
  expect(byName.ams.requests).toHaveLength(1)
  expect(byName.iad.requests).toHaveLength(1)
})

test('region lists are forced, take aliases, and reach everywhere only with "any"', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad', 'syd'], fromHeader)

  const alias = await get('/', 'region="lhr,us"') // no lhr Machine; "us" holds iad
  expect(alias.status).toBe(200)
  expect(alias.json().machine).toBe(byName.iad.addr)

  const ordered = await get('/', 'region="syd,iad"')
  expect(ordered.json().machine).toBe(byName.syd.addr)

  const any = await get('/', 'region="nrt,any";elsewhere=true')
  expect(any.status).toBe(200)
  expect([byName.iad.addr, byName.syd.addr]).toContain(any.json().machine)
  expect(srcFields(any.json().headers['fly-replay-src']).instance).toBe(byName.ams.record!.id)

  const forced = await get('/', 'region=nrt')
  expect(forced.status).toBe(503)
  expect(forced.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
  expect(forced.text).toContain(`fly-replay from Machine ${byName.ams.record!.id}`)
  expect(forced.text).toContain('has no started, healthy Machine in nrt')
})

test('instance forces one Machine; an instance of another app is refused as inconsistent', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad', 'iad2'], fromHeader)
  for (let i = 0; i < 4; i++) {
    const res = await get('/', `instance=${byName.iad2.record!.id}`)
    expect(res.json().machine).toBe(byName.iad2.addr)
  }
  const other = await regionApp(h, 'api', ['iad'], echoHandler)
  const wrong = await get('/', `instance=${other.byName.iad.record!.id}`)
  expect(wrong.status).toBe(502)
  expect(wrong.headers['edgeproxy-error']).toBe('EP_REPLAY_INVALID')
  expect(wrong.text).toContain(`is a Machine of app "api", not of "web"`)

  const gone = await get('/', 'instance=00000000000bad')
  expect(gone.status).toBe(503)
  expect(gone.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
  expect(gone.text).toContain('(Machine 00000000000bad)')
})

test('prefer_instance uses that Machine when it can, else another one with fly-preferred-instance-unavailable', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], fromHeader)

  const preferred = await get('/', `prefer_instance=${byName.iad.record!.id}`)
  expect(preferred.json().machine).toBe(byName.iad.addr)
  expect(preferred.json().headers['fly-preferred-instance-unavailable']).toBeUndefined()

  const missing = '0123456789abcd'
  const fallback = await get('/', `prefer_instance=${missing};elsewhere=true`)
  expect(fallback.status).toBe(200)
  expect(fallback.json().machine).toBe(byName.iad.addr)
  expect(fallback.json().headers['fly-preferred-instance-unavailable']).toBe(missing)
})

test('app: the request is replayed to another app, which sees where it came from; an unknown app is PA04', async () => {
  h = await startHarness()
  const web = await regionApp(h, 'web', ['ams'], fromHeader)
  const api = await regionApp(h, 'api', ['iad'], echoHandler)

  const res = await get('/v1/items', 'app=api;state=from-web')
  expect(res.status).toBe(200)
  const body = res.json()
  expect(body.machine).toBe(api.byName.iad.addr)
  expect(body.url).toBe('/v1/items')
  expect(body.headers.host).toBe('web.localhost')
  expect(srcFields(body.headers['fly-replay-src'])).toMatchObject({ instance: web.byName.ams.record!.id, region: 'ams', state: 'from-web' })

  const unknown = await get('/', 'app=nope')
  expect(unknown.status).toBe(502)
  expect(unknown.headers['edgeproxy-error']).toBe('EP_REPLAY_TARGET_NOT_FOUND')
  expect(unknown.text).toContain('names app "nope", which is not deployed')
})

test('state is copied into fly-replay-src, quoted when it is not a token', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], fromHeader)
  const plain = await get('/', 'region=iad;state=cart42')
  expect(plain.json().machine).toBe(byName.iad.addr)
  expect(srcFields(plain.json().headers['fly-replay-src']).state).toBe('cart42')
  const quoted = await get('/', 'region=iad;state="user 7; step 2"')
  expect(quoted.json().headers['fly-replay-src']).toMatch(/;state="user 7; step 2"$/)
})

test('elsewhere=true leaves the responding Machine out of the next round', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'ams2'], fromHeader)
  for (let i = 0; i < 5; i++) {
    // the first hop is pinned to ams; the replay (same app, same region) must go to the other one
    const res = await get('/', 'elsewhere=true', { 'fly-force-instance-id': byName.ams.record!.id })
    expect(res.json().machine).toBe(byName.ams2.addr)
  }
})

test('an unreadable fly-replay is a 502 that names the problem, and the app response never leaks', async () => {
  h = await startHarness()
  await regionApp(h, 'web', ['ams', 'iad'], fromHeader)
  const res = await get('/', 'region=iad,ord')
  expect(res.status).toBe(502)
  expect(res.headers['edgeproxy-error']).toBe('EP_REPLAY_INVALID')
  expect(res.text).toContain('quote a list, e.g. region="iad,ord"')
  const unknown = await get('/', 'regoin=iad')
  expect(unknown.status).toBe(502)
  expect(unknown.text).toContain('invalid fly-replay header: (root): Unrecognized key: "regoin"')
})
