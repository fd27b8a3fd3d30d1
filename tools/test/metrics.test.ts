import { afterEach, beforeEach, expect, test } from 'vitest'
import { request } from 'undici'
import pino from 'pino'
import { startHarness, type Harness } from '../../proxy/test/harness.js'
import { adminApi, type AdminApi } from '../admin-api/server.js'
import { metricsRegistry } from '../metrics/registry.js'

let h: Harness
let api: AdminApi
let base: string

beforeEach(async () => {
  h = await startHarness()
  api = adminApi({ host: '127.0.0.1', port: 0 })({
    catalog: h.catalog,
    self: { name: 'edge-1', region: 'ams', roles: ['edge', 'worker'] },
    metrics: metricsRegistry({ catalog: h.catalog, proxy: h.proxy }).render,
    log: pino({ level: 'silent' }),
  })
  await api.start()
  base = `http://${api.address()}`
})
afterEach(async () => {
  await api.stop()
  await h.stop()
})

async function scrape(): Promise<Map<string, number>> {
  const res = await request(`${base}/metrics`)
  expect(res.headers['content-type']).toContain('text/plain')
  const out = new Map<string, number>()
  for (const line of (await res.body.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}

test('metrics change as traffic flows: requests, responses, route errors, catalog state', async () => {
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(`app = "web"\n[[services]]\ninternal_port = ${port}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`)
  await h.addMachine('web', machines[0])
  await h.settle()
  const before = await scrape()
  expect(before.get('edgeproxy_catalog_machines{state="started"}')).toBe(1)
  expect(before.get('edgeproxy_catalog_seq')).toBe(h.catalog.lastSeq)
  expect(before.has('edgeproxy_process_resident_memory_bytes')).toBe(true)

  for (let i = 0; i < 5; i++) {
    const res = await request(h.url(80, '/'), { headers: { host: 'web.localhost' } })
    await res.body.dump()
  }
  const unknown = await request(h.url(80, '/'), { headers: { host: 'nope.localhost' } })
  expect(unknown.statusCode).toBe(404)
  await unknown.body.dump()

  const after = await scrape()
  const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0)
  expect(delta('edgeproxy_proxy_requests_total')).toBeGreaterThanOrEqual(5)
  expect(delta('edgeproxy_proxy_responses_total')).toBe(5)
  expect(delta('edgeproxy_proxy_route_errors_total{code="EP_NO_APP"}')).toBe(1)
  expect(delta('edgeproxy_proxy_connections_accepted_total')).toBeGreaterThanOrEqual(1)
  expect(delta('edgeproxy_requests_total{app="web",handler="http",status="200"}')).toBe(5)
  expect(delta('edgeproxy_requests_total{app="-",handler="http",status="404"}')).toBe(1)
  expect(delta('edgeproxy_request_phase_seconds_count{phase="total"}')).toBe(6)
  expect(delta('edgeproxy_request_phase_seconds_count{phase="upstream"}')).toBe(5)
  expect(after.get('edgeproxy_request_phase_seconds_bucket{phase="total",le="+Inf"}')).toBe(after.get('edgeproxy_request_phase_seconds_count{phase="total"}'))
  const machine = [...after.keys()].find((k) => k.startsWith('edgeproxy_machine_load{app="web"'))
  expect(machine).toBeDefined()
  expect(after.get('edgeproxy_proxy_queue_depth')).toBe(0)
})

test('the request log has one structured line per request, sampled, with phases and ids', async () => {
  const lines: Array<Record<string, unknown>> = []
  const log = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
  const h2 = await startHarness({ requestLogSample: 1 }, { log })
  try {
    const { port, machines } = await h2.httpMachines(1)
    await h2.deploy(`app = "web"\n[[services]]\ninternal_port = ${port}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`)
    const m = await h2.addMachine('web', machines[0])
    await h2.settle()
    const res = await request(h2.url(80, '/hello'), { headers: { host: 'web.localhost' } })
    const body = await res.body.text()
    const reqId = res.headers['fly-request-id']
    const entries = lines.filter((l) => l.msg === 'request')
    expect(entries).toHaveLength(1)
    expect(entries[0]).toMatchObject({ reqId, app: 'web', machine: m.id, region: 'ams', handler: 'http', status: 200, part: 'request-log' })
    expect(entries[0].bytes).toBeGreaterThan(body.length)
    const ms = entries[0].ms as Record<string, number>
    expect(ms.total).toBeGreaterThanOrEqual(ms.route + ms.upstream)
  } finally {
    await h2.stop()
  }
})
