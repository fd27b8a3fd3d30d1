import type { IncomingMessage, ServerResponse } from 'node:http'
import { Agent, request } from 'undici'
import { afterEach, describe, expect, test } from 'vitest'
import { echoHandler, httpApp, startHarness, type Harness, type TestMachine } from './harness.js'
import { RawConnection } from './raw-client.js'

let h: Harness | undefined
const agents: Agent[] = []
let conns: RawConnection[] = []
afterEach(async () => {
  for (const c of conns) c.close()
  conns = []
  for (const a of agents.splice(0)) await a.close()
  await h?.stop()
  h = undefined
})

/** Machines whose `/hold/<key>` requests wait until `release(key)`; everything else is echoed. */
function holdingHandler() {
  const held = new Map<string, { res: ServerResponse; machine: TestMachine }>()
  const arrived = new Map<string, (machine: TestMachine) => void>()
  const handler = (req: IncomingMessage, res: ServerResponse, machine: TestMachine): void => {
    const m = /^\/hold\/(\w+)/.exec(req.url ?? '')
    if (m === null) { echoHandler(req, res, machine); return }
    held.set(m[1], { res, machine })
    arrived.get(m[1])?.(machine)
  }
  /** Resolves with the Machine once the held request arrived there. */
  const heldAt = (key: string): Promise<TestMachine> => {
    const h0 = held.get(key)
    if (h0 !== undefined) return Promise.resolve(h0.machine)
    return new Promise((resolve) => arrived.set(key, resolve))
  }
  const release = (key: string): void => {
    const h0 = held.get(key)!
    h0.res.end(JSON.stringify({ machine: h0.machine.addr, key }))
  }
  return { handler, heldAt, release }
}

function get(path: string, headers: Record<string, string> = {}) {
  return request(h!.url(80, path), { headers: { host: 'web.localhost', ...headers } })
}

async function machineOf(path: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await get(path, headers)
  const body = await res.body.json() as { machine: string }
  return body.machine
}

describe('spreading and tiers', () => {
  test('requests spread over 3 Machines within ±20%', async () => {
    h = await startHarness()
    const { port, machines } = await h.httpMachines(3)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 25'))
    for (const m of machines) await h.addMachine('web', m)
    const counts = new Map<string, number>()
    const agent = new Agent({ connections: 16 })
    agents.push(agent)
    const worker = async () => {
      for (let i = 0; i < 150; i++) {
        const res = await request(h!.url(80), { headers: { host: 'web.localhost' }, dispatcher: agent })
        const { machine } = await res.body.json() as { machine: string }
        counts.set(machine, (counts.get(machine) ?? 0) + 1)
      }
    }
    await Promise.all(Array.from({ length: 16 }, worker))
    const total = 16 * 150
    expect([...counts.keys()].sort()).toEqual(machines.map((m) => m.addr).sort())
    for (const n of counts.values()) {
      expect(n).toBeGreaterThanOrEqual((total / 3) * 0.8)
      expect(n).toBeLessThanOrEqual((total / 3) * 1.2)
    }
  })

  test('a Machine at soft_limit gets no traffic while another is under it; at hard_limit none at all', async () => {
    h = await startHarness()
    const hold = holdingHandler()
    const { port, machines } = await h.httpMachines(2, hold.handler)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 1\nhard_limit = 2'))
    for (const m of machines) await h.addMachine('web', m)

    const a = get('/hold/a')
    const first = await hold.heldAt('a')
    const other = machines.find((m) => m !== first)!
    // `first` is at soft_limit (T1): the next requests go to the other one while it is under it
    expect(await machineOf('/')).toBe(other.addr)
    const b = get('/hold/b')
    expect(await hold.heldAt('b')).toBe(other)
    // both at soft_limit: T1 on both, still served
    const c = get('/hold/c')
    await hold.heldAt('c')
    const d = get('/hold/d')
    await hold.heldAt('d')
    // both at hard_limit: the next request waits in the queue until a lease ends
    const e = get('/')
    await waitFor(() => h!.proxy.stats.queued === 1)
    hold.release('a')
    const [resE] = await Promise.all([e, a])
    expect(resE.statusCode).toBe(200)
    expect((await resE.body.json() as { machine: string }).machine).toBe(first.addr)
    for (const key of ['b', 'c', 'd']) hold.release(key)
    await Promise.all([b, c, d].map(async (p) => (await p).body.text()))
  })

  test('with type=connections a client connection stays on its Machine and counts once', async () => {
    h = await startHarness()
    const { port, machines } = await h.httpMachines(2)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "connections"\nsoft_limit = 1\nhard_limit = 5'))
    for (const m of machines) await h.addMachine('web', m)
    const one = await RawConnection.open(h.port(80))
    const two = await RawConnection.open(h.port(80))
    conns.push(one, two)
    const seen1 = new Set<string>()
    for (let i = 0; i < 5; i++) {
      one.write(`GET /${i} HTTP/1.1\r\nHost: web.localhost\r\n\r\n`)
      const text = await one.until((t) => t.includes(`"url":"/${i}"`) && t.endsWith('}'))
      seen1.add(/"machine":"([\d.]+)"/.exec(text.slice(text.lastIndexOf('HTTP/1.1 200')))![1])
    }
    expect(seen1.size).toBe(1)
    two.write('GET /x HTTP/1.1\r\nHost: web.localhost\r\n\r\n')
    const text2 = await two.until((t) => t.endsWith('}'))
    expect(/"machine":"([\d.]+)"/.exec(text2)![1]).not.toBe([...seen1][0])
  })
})

describe('load accounting', () => {
  test('type=requests counts in-flight requests, type=connections counts open client connections; both return to zero', async () => {
    h = await startHarness()
    const hold = holdingHandler()
    const { port, machines } = await h.httpMachines(1, hold.handler)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 10'))
    await h.deploy(`app = "conn"\n[[services]]\ninternal_port = ${port}\n[services.concurrency]\ntype = "connections"\nsoft_limit = 10\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`)
    await h.addMachine('web', machines[0])
    await h.addMachine('conn', machines[0])
    const load = (app: string) => h!.proxy.index.app(app)!.services[0].totalLoad()

    const a = get('/hold/a')
    const b = get('/hold/b')
    await hold.heldAt('a')
    await hold.heldAt('b')
    expect(load('web')).toBe(2)
    hold.release('a')
    hold.release('b')
    await Promise.all([a, b].map(async (p) => (await p).body.text()))
    expect(load('web')).toBe(0)

    const c = await RawConnection.open(h.port(80))
    conns.push(c)
    for (let i = 0; i < 3; i++) {
      c.write(`GET /${i} HTTP/1.1\r\nHost: conn.localhost\r\n\r\n`)
      await c.until((t) => t.includes(`"url":"/${i}"`) && t.endsWith('}'))
    }
    expect(load('conn')).toBe(1) // one connection, three requests, idle now: still one
    c.close()
    await waitFor(() => load('conn') === 0)
  })

  test('Machines of a node marked down take no traffic until it is up again', async () => {
    h = await startHarness()
    const { port, machines } = await h.httpMachines(1)
    await h.deploy(httpApp('web', port))
    await h.addMachine('web', machines[0])
    await h.catalog.appendDerived({ type: 'node.down', node: machines[0].record!.node, lastSeen: Date.now() - 60_000 })
    await h.settle()
    const down = await get('/')
    expect(down.statusCode).toBe(503)
    expect(down.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
    await down.body.text()
    await h.catalog.appendDerived({ type: 'node.up', node: machines[0].record!.node })
    await h.settle()
    expect(await machineOf('/')).toBe(machines[0].addr)
  })
})

describe('queue and 503s', () => {
  test('all Machines at hard_limit: the request waits, then gets 503 EP_CAPACITY', async () => {
    h = await startHarness({ queue: { queueTimeoutMs: 300 } })
    const hold = holdingHandler()
    const { port, machines } = await h.httpMachines(1, hold.handler)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 1\nhard_limit = 1'))
    await h.addMachine('web', machines[0])
    const a = get('/hold/a')
    await hold.heldAt('a')
    const started = Date.now()
    const res = await get('/')
    expect(res.statusCode).toBe(503)
    expect(res.headers['edgeproxy-error']).toBe('EP_CAPACITY')
    expect(await res.body.text()).toContain('hard_limit')
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    hold.release('a')
    expect((await a).statusCode).toBe(200)
  })

  test('a full queue answers 503 at once', async () => {
    h = await startHarness({ queue: { queueTimeoutMs: 10_000, queueLimit: 1 } })
    const hold = holdingHandler()
    const { port, machines } = await h.httpMachines(1, hold.handler)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 1\nhard_limit = 1'))
    await h.addMachine('web', machines[0])
    const a = get('/hold/a')
    await hold.heldAt('a')
    const queued = get('/')
    await waitFor(() => h!.proxy.stats.queued === 1)
    const rejected = await get('/')
    expect(rejected.statusCode).toBe(503)
    expect(rejected.headers['edgeproxy-error']).toBe('EP_CAPACITY')
    await rejected.body.text()
    hold.release('a')
    expect((await queued).statusCode).toBe(200)
    await a
  })

  test('no healthy Machine: 503 EP_NO_HEALTHY_MACHINE with the command to look', async () => {
    h = await startHarness()
    const { port, machines } = await h.httpMachines(2)
    await h.deploy(httpApp('web', port))
    const m1 = await h.addMachine('web', machines[0])
    const m2 = await h.addMachine('web', machines[1])
    await h.catalog.reportHealth(m1.id, { checks: { http: 'critical' }, ready: true })
    await h.catalog.setCordoned(m2.id, true, 'test')
    await h.settle()
    const res = await get('/')
    expect(res.statusCode).toBe(503)
    expect(res.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
    expect(await res.body.text()).toContain('edgeproxy catalog machines --app web')
    const explained = h.proxy.explain('web.localhost', 80)
    expect(explained.candidates).toEqual([])
    expect(explained.excluded.map((e) => e.reason).sort()).toEqual(['a health check is critical', 'cordoned'])
    await h.catalog.setCordoned(m2.id, false, 'test')
    await h.settle()
    expect(await machineOf('/')).toBe(machines[1].addr)
  })
})

describe('routing headers', () => {
  test('fly-force-instance-id and fly-prefer-instance-id (with fly-preferred-instance-unavailable)', async () => {
    h = await startHarness()
    const hold = holdingHandler()
    const { port, machines } = await h.httpMachines(2, hold.handler)
    await h.deploy(httpApp('web', port, '[services.concurrency]\ntype = "requests"\nsoft_limit = 1\nhard_limit = 1'))
    const [r1, r2] = [await h.addMachine('web', machines[0]), await h.addMachine('web', machines[1])]
    for (let i = 0; i < 3; i++) expect(await machineOf('/', { 'fly-force-instance-id': r2.id })).toBe(machines[1].addr)
    const a = get('/hold/a', { 'fly-force-instance-id': r1.id })
    await hold.heldAt('a')
    const res = await get('/', { 'fly-prefer-instance-id': r1.id })
    const body = await res.body.json() as { machine: string; headers: Record<string, string> }
    expect(body.machine).toBe(machines[1].addr)
    expect(body.headers['fly-preferred-instance-unavailable']).toBe(r1.id)
    expect(body.headers['fly-prefer-instance-id']).toBeUndefined()
    hold.release('a')
    await (await a).body.text()
  })

  test('fly-force-region stays in the list, fly-prefer-region falls back', async () => {
    h = await startHarness()
    const { port, machines } = await h.httpMachines(2)
    await h.deploy(httpApp('web', port))
    await h.addMachine('web', machines[0])
    await h.addMachine('web', machines[1], { region: 'iad' })
    for (let i = 0; i < 3; i++) expect(await machineOf('/', { 'fly-force-region': 'iad' })).toBe(machines[1].addr)
    for (let i = 0; i < 3; i++) expect(await machineOf('/', { 'fly-prefer-region': 'syd,iad' })).toBe(machines[1].addr)
    expect([machines[0].addr, machines[1].addr]).toContain(await machineOf('/', { 'fly-prefer-region': 'syd' }))
    const res = await get('/', { 'fly-force-region': 'syd' })
    expect(res.statusCode).toBe(503)
    expect(res.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
    await res.body.text()
  })
})

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  // state inside the proxy has no event to await; poll it briefly on the event loop
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((r) => setImmediate(r))
  }
}
