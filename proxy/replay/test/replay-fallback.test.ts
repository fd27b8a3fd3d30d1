import type { ServerResponse } from 'node:http'
import { once } from 'node:events'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { echoHandler, type Harness, httpApp, type MachineHandler, startHarness } from '../../test/harness.js'
import { type Echo, regionApp, replaysOnce, replayWith, srcFields } from './replay-apps.js'

let h: Harness | undefined
const held: ServerResponse[] = []
afterEach(async () => {
  for (const res of held.splice(0)) res.end()
  await h?.stop()
  h = undefined
})

const fromHeader = replaysOnce((req) => req.headers['x-replay'] as string | undefined)

async function get(replay: string, headers: Record<string, string> = {}) {
  const res = await request(h!.url(80, '/'), { headers: { host: 'web.localhost', 'x-replay': replay, ...headers } })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as Echo }
}

test('no target and fallback=force_self: back to the very Machine, told why in fly-replay-failed', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], fromHeader)
  const res = await get('region=syd;fallback=force_self')
  expect(res.status).toBe(200)
  const body = res.json()
  expect(body.machine).toBe(byName.ams.addr)
  expect(body.headers['fly-replay-src']).toBeUndefined()
  const failed = srcFields(body.headers['fly-replay-failed'])
  expect(failed).toMatchObject({ app: 'web', region: 'syd', replay_source: byName.ams.record!.id, reason: 'no_candidate' })
  expect(Number(failed.elapsed_ms)).toBeGreaterThanOrEqual(0)
  expect(byName.ams.requests).toHaveLength(2)
  expect(byName.iad.requests).toHaveLength(0)
})

test('no target and no fallback: 503 EP_NO_HEALTHY_MACHINE, also for an app without Machines', async () => {
  h = await startHarness()
  await regionApp(h, 'web', ['ams'], fromHeader)
  await h.deploy(httpApp('empty', 9))
  const region = await get('region=syd')
  expect(region.status).toBe(503)
  expect(region.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
  expect(region.text).toContain('add fallback=prefer_self')
  const app = await get('app=empty')
  expect(app.status).toBe(503)
  expect(app.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
  expect(app.text).toContain('app "empty" has no started, healthy Machine')
})

test('the source cannot take the fallback: prefer_self goes to another Machine of the app, force_self fails', async () => {
  h = await startHarness()
  // ams fails its checks just as it answers with fly-replay (it is no longer eligible for the fallback)
  const sickThenReplay: MachineHandler = (req, res, m) => {
    if (req.headers['fly-replay-failed'] !== undefined || m.record?.region !== 'ams' || req.url === '/') { echoHandler(req, res, m); return }
    void (async () => {
      await h!.catalog.reportHealth(m.record!.id, { checks: { 'servicecheck-00-http-8080': 'critical' }, ready: true })
      await h!.settle()
      replayWith(res, `region=syd;fallback=${req.url!.slice(1)}`)
    })()
  }
  const { byName } = await regionApp(h, 'web', ['ams', 'ams2'], sickThenReplay)
  const pin = { host: 'web.localhost', 'fly-force-instance-id': byName.ams.record!.id }

  const prefer = await request(h.url(80, '/prefer_self'), { headers: pin })
  const body = await prefer.body.json() as Echo
  expect(prefer.statusCode).toBe(200)
  expect(body.machine).toBe(byName.ams2.addr)
  expect(srcFields(body.headers['fly-replay-failed'])).toMatchObject({ replay_source: byName.ams.record!.id, reason: 'no_candidate' })

  await h.catalog.reportHealth(byName.ams.record!.id, { checks: {}, ready: true })
  await h.settle()
  const force = await request(h.url(80, '/force_self'), { headers: pin })
  const text = await force.body.text()
  expect(force.statusCode).toBe(503)
  expect(force.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
  expect(text).toContain(`fallback=force_self: Machine ${byName.ams.record!.id} cannot take it any more`)
})

test('a target that refuses connections: retries_exhausted, then the fallback or a 502', async () => {
  h = await startHarness()
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], fromHeader)
  byName.iad.server.close() // still "started" in the catalog: the proxy finds out by connecting
  await once(byName.iad.server, 'close')

  const back = await get('region=iad;fallback=prefer_self')
  expect(back.status).toBe(200)
  expect(back.json().machine).toBe(byName.ams.addr)
  expect(srcFields(back.json().headers['fly-replay-failed'])).toMatchObject({ app: 'web', region: 'iad', reason: 'retries_exhausted' })

  const bare = await get('region=iad')
  expect(bare.status).toBe(502)
  expect(bare.headers['edgeproxy-error']).toBe('EP_MACHINE_UNREACHABLE')
  expect(bare.text).toContain('could be reached')
})

test('timeout bounds the wait for a target (504 EP_REPLAY_TIMEOUT), or falls back with reason=timeout', async () => {
  h = await startHarness()
  const limits = '[services.concurrency]\ntype = "requests"\nsoft_limit = 1\nhard_limit = 1'
  const { byName } = await regionApp(h, 'web', ['ams', 'iad'], (req, res, m) => {
    if (req.url === '/hold') { held.push(res); return } // keeps iad at its hard_limit
    fromHeader(req, res, m)
  }, limits)
  const hold = request(h.url(80, '/hold'), { headers: { host: 'web.localhost', 'fly-force-region': 'iad' } })
  while (byName.iad.requests.length === 0) await once(byName.iad.server, 'request')

  const started = Date.now()
  const timedOut = await get('region=iad;timeout=300ms')
  expect(timedOut.status).toBe(504)
  expect(timedOut.headers['edgeproxy-error']).toBe('EP_REPLAY_TIMEOUT')
  expect(timedOut.text).toContain('within timeout=300 ms')
  expect(Date.now() - started).toBeGreaterThanOrEqual(290)

  const back = await get('region=iad;timeout=200ms;fallback=prefer_self')
  expect(back.status).toBe(200)
  expect(back.json().machine).toBe(byName.ams.addr)
  const failed = srcFields(back.json().headers['fly-replay-failed'])
  expect(failed.reason).toBe('timeout')
  expect(Number(failed.elapsed_ms)).toBeGreaterThanOrEqual(190)

  held.splice(0).forEach((res) => res.end('done'))
  expect((await hold).statusCode).toBe(200)
  expect(byName.iad.requests).toHaveLength(1) // the replays never reached it
})

test('a request that fell back cannot be replayed again: 508 EP_REPLAY_LOOP', async () => {
  h = await startHarness()
  await regionApp(h, 'web', ['ams'], (req, res) => { req.resume(); replayWith(res, 'region=syd;fallback=force_self') })
  const res = await get('')
  expect(res.status).toBe(508)
  expect(res.headers['edgeproxy-error']).toBe('EP_REPLAY_LOOP')
  expect(res.text).toContain('already fell back')
})
