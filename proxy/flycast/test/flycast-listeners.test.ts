import { connect } from 'node:net'
import { once } from 'node:events'
import { Agent, request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { allocateFlycastAddress, parseFlycastRange } from '../../../schemas/flycast.js'
import { type Harness, httpApp, startHarness } from '../../test/harness.js'
import { type Echo, regionApp, replaysOnce } from '../../replay/test/replay-apps.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

/** A Flycast range of this test process, so that parallel test files never bind the same address. */
const RANGE = parseFlycastRange(`127.77.${(process.pid % 200) + 20}.0/24`)
const taken = new Set<string>()
function flycastAddress(app: string): string {
  const addr = allocateFlycastAddress(RANGE, `${app}-${taken.size}`, taken)!
  taken.add(addr)
  return addr
}

async function giveFlycast(app: string): Promise<string> {
  const addr = flycastAddress(app)
  await h!.catalog.setFlycast(app, addr)
  await h!.settle()
  return addr
}

function viaFlycast(app: string, addr: string, path = '/', host = `${app}.flycast`) {
  const port = h!.proxy.flycastPort(app, 80)
  if (port === undefined) throw new Error(`no Flycast listener for ${app}`)
  return request(`http://${addr}:${port}${path}`, { headers: { host } })
}

function refused(host: string, port: number): Promise<string> {
  const s = connect({ host, port })
  return new Promise((resolve) => {
    s.once('connect', () => { s.destroy(); resolve('connected') })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

test('an app with a Flycast address is served on that address only, balanced over its Machines', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  const { byName } = await regionApp(h, 'web', ['ams', 'ams2'], (req, res, m) => replaysOnce(() => undefined)(req, res, m))
  const addr = await giveFlycast('web')
  const seen = new Set<string>()
  for (let i = 0; i < 12; i++) {
    // any Host works on a Flycast listener: the address names the app
    const res = await viaFlycast('web', addr, '/x', i % 2 === 0 ? 'web.flycast' : addr)
    const body = await res.body.json() as Echo
    expect(res.statusCode).toBe(200)
    seen.add(body.machine)
    expect(body.headers['fly-forwarded-port']).toBe(String(h.proxy.flycastPort('web', 80)))
    expect(body.headers['x-forwarded-port']).toBe('80')
    expect(body.headers['fly-client-ip']).toBe('127.0.0.1')
  }
  expect(seen).toEqual(new Set([byName.ams.addr, byName.ams2.addr]))
  // the Flycast port is bound on the private address alone
  expect(await refused('127.0.0.1', h.proxy.flycastPort('web', 80)!)).toBe('ECONNREFUSED')
})

test('the public listener refuses a Flycast name with 403 EP_FLYCAST_ONLY', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  await regionApp(h, 'web', ['ams'], replaysOnce(() => undefined))
  await giveFlycast('web')
  const res = await request(h.url(80), { headers: { host: 'web.flycast' } })
  const text = await res.body.text()
  expect(res.statusCode).toBe(403)
  expect(res.headers['edgeproxy-error']).toBe('EP_FLYCAST_ONLY')
  expect(text).toContain('"web.flycast" is a Flycast name, reachable only on its private address')
  const named = await request(h.url(80), { headers: { host: 'other.flycast:80' } })
  expect(named.statusCode).toBe(403)
  await named.body.text()
  const publicName = await request(h.url(80), { headers: { host: 'web.localhost' } })
  expect(publicName.statusCode).toBe(200) // the app itself stays public (FLY-SPEC §9: public IPs expose the same services)
  await publicName.body.text()
})

test('force_https does not apply on Flycast (no public certificate covers it); it still does publicly', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(httpApp('web', port, '').replace('handlers = ["http"]', 'handlers = ["http"]\nforce_https = true'))
  await h.addMachine('web', machines[0])
  const addr = await giveFlycast('web')
  const priv = await viaFlycast('web', addr)
  expect(priv.statusCode).toBe(200)
  await priv.body.text()
  const pub = await request(h.url(80), { headers: { host: 'web.localhost' } })
  expect(pub.statusCode).toBe(301)
  await pub.body.text()
})

test('fly-replay works through a Flycast listener, to another app too', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  const web = await regionApp(h, 'web', ['ams', 'iad'], replaysOnce((req) => req.headers['x-replay'] as string | undefined))
  const api = await regionApp(h, 'api', ['iad'], replaysOnce(() => undefined))
  const addr = await giveFlycast('web')
  const port = h.proxy.flycastPort('web', 80)!
  for (const [replay, machine] of [['region=iad', web.byName.iad.addr], ['app=api', api.byName.iad.addr]]) {
    const res = await request(`http://${addr}:${port}/`, { headers: { host: 'web.flycast', 'x-replay': replay } })
    const body = await res.body.json() as Echo
    expect(body.machine).toBe(machine)
    expect(body.headers['fly-replay-src']).toContain(`instance=${web.byName.ams.record!.id}`)
  }
})

test('a new address moves the listeners; two apps claiming one address: the first by name gets it', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  await regionApp(h, 'web', ['ams'], replaysOnce(() => undefined))
  await regionApp(h, 'api', ['ams'], replaysOnce(() => undefined))
  const first = await giveFlycast('web')
  const oldPort = h.proxy.flycastPort('web', 80)!
  const second = await giveFlycast('web')
  expect(await refused(first, oldPort)).toBe('ECONNREFUSED')
  const moved = await viaFlycast('web', second)
  expect(moved.statusCode).toBe(200)
  await moved.body.text()

  // as if two nodes had allocated at once: api now claims web's address; "api" < "web" so api owns it
  await h.catalog.setFlycast('api', second)
  await h.settle()
  expect(h.proxy.flycastPort('web', 80)).toBeUndefined()
  const owner = await viaFlycast('api', second)
  expect(owner.statusCode).toBe(200)
  const body = await owner.body.json() as Echo
  expect(h.machines.find((m) => m.addr === body.machine)?.record?.app).toBe('api')
})

test('stop closes the Flycast listeners', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  await regionApp(h, 'web', ['ams'], replaysOnce(() => undefined))
  const addr = await giveFlycast('web')
  const port = h.proxy.flycastPort('web', 80)!
  const probe = connect({ host: addr, port })
  await once(probe, 'connect')
  probe.destroy()
  await h.stop()
  h = undefined
  expect(await refused(addr, port)).toBe('ECONNREFUSED')
})

test('tls applies on a Flycast port too, with the fallback certificate of the node (none is public for .flycast)', async () => {
  h = await startHarness({ flycastPortMap: () => 0 })
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(`app = "web"\n[http_service]\ninternal_port = ${port}\n`)
  await h.addMachine('web', machines[0])
  const addr = await giveFlycast('web')
  const agent = new Agent({ connect: { rejectUnauthorized: false, servername: 'web.flycast' } })
  try {
    const res = await request(`https://${addr}:${h.proxy.flycastPort('web', 443)}/secure`, { dispatcher: agent, headers: { host: 'web.flycast' } })
    const body = await res.body.json() as Echo
    expect(res.statusCode).toBe(200)
    expect(body.url).toBe('/secure')
    expect(body.headers['x-forwarded-proto']).toBe('https')
    expect(body.headers['x-forwarded-port']).toBe('443')
  } finally {
    await agent.close()
  }
})
