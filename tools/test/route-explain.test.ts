import { afterEach, beforeEach, expect, test } from 'vitest'
import { request } from 'undici'
import pino from 'pino'
import { startHarness, type Harness } from '../../proxy/test/harness.js'
import { adminApi, type AdminApi } from '../admin-api/server.js'

const TOML = `app = "web"
primary_region = "ams"
[[services]]
  internal_port = PORT
  [[services.ports]]
    port = 80
    handlers = ["http"]
  [services.concurrency]
    type = "requests"
    soft_limit = 5
    hard_limit = 10
`

let h: Harness
let api: AdminApi
let base: string

beforeEach(async () => {
  h = await startHarness()
  api = adminApi({ host: '127.0.0.1', port: 0 })({
    catalog: h.catalog,
    self: { name: 'edge-1', region: 'ams', roles: ['edge', 'worker'] },
    route: { domain: h.proxy.index.domain, explain: (host, port, hints) => h.proxy.explain(host, port, hints) },
    log: pino({ level: 'silent' }),
  })
  await api.start()
  base = `http://${api.address()}`
})
afterEach(async () => {
  await api.stop()
  await h.stop()
})

interface Explained { app?: string; problem?: string; seq: number; choice?: { machine?: string; region?: string; none?: string }; why?: string; candidates: Array<{ machine: string; region: string }>; excluded: Array<{ machine: string; reason: string }> }

async function explain(query: Record<string, string | string[]>): Promise<Explained> {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) q.append(k, x)
  const res = await request(`${base}/v1/route/explain?${q}`)
  expect(res.statusCode).toBe(200)
  return (await res.body.json()) as Explained
}

async function servedBy(headers: Record<string, string> = {}): Promise<string> {
  const res = await request(h.url(80, '/'), { headers: { host: 'web.localhost', ...headers } })
  const body = (await res.body.json()) as { machine: string }
  return body.machine
}

test('route explain names the Machine requests really go to, with routing headers and health, and --at SEQ reproduces a past decision', async () => {
  const { port, machines } = await h.httpMachines(2)
  await h.deploy(TOML.replace('PORT', String(port)))
  const ams = await h.addMachine('web', machines[0], { region: 'ams' })
  const iad = await h.addMachine('web', machines[1], { region: 'iad' })
  await h.settle()

  const live = await explain({ host: 'web.localhost' })
  expect(live.choice).toMatchObject({ machine: ams.id, region: 'ams' })
  expect(live.why).toContain('ams is the closest region')
  expect(live.candidates.map((c) => c.region)).toEqual(['ams', 'iad'])
  expect(await servedBy()).toBe(machines[0].addr)

  const preferIad = await explain({ host: 'web.localhost', header: 'fly-prefer-region:iad' })
  expect(preferIad.choice).toMatchObject({ machine: iad.id })
  expect(await servedBy({ 'fly-prefer-region': 'iad' })).toBe(machines[1].addr)

  const before = h.catalog.lastSeq
  await h.catalog.reportHealth(ams.id, { checks: { http: 'critical' }, ready: true })
  await h.settle()
  const unhealthy = await explain({ host: 'web.localhost' })
  expect(unhealthy.choice).toMatchObject({ machine: iad.id, region: 'iad' })
  expect(unhealthy.excluded).toEqual([expect.objectContaining({ machine: ams.id, reason: expect.stringContaining('check') })])
  expect(await servedBy()).toBe(machines[1].addr)

  // the past: before the health change, ams was chosen
  const past = await explain({ host: 'web.localhost', at: String(before) })
  expect(past.seq).toBe(before)
  expect(past.choice).toMatchObject({ machine: ams.id })
  const unknown = await explain({ host: 'nope.localhost' })
  expect(unknown).toMatchObject({ problem: 'no app answers to "nope.localhost"', candidates: [] })
  expect(unknown.app).toBeUndefined()
})
