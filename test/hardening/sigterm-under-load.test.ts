import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { waitFor } from '../helpers/wait-for.js'
import { type ConnRecord, type KeepAliveClients, type RequestRecord, startKeepAliveClients } from './helpers/a-keepalive-clients.js'
import { type CatalogPicture, catalogPicture, identicalPictures } from './helpers/catalog-picture.js'
import { DaemonFleet, getJson, logRecord } from './helpers/daemon-fleet.js'
import { readEventLog } from './helpers/event-log.js'
import { failures, startTraffic } from './helpers/traffic.js'

/**
 * Issue 11 item 9: SIGTERM to a real daemon while keep-alive clients load it with fast requests and slow
 * ones (1.5 s at the Machine). Every request the proxy had accepted — its own count, logged as it stops —
 * must get its whole, correct answer; keep-alive connections must end between requests (a response with
 * `Connection: close`, or an idle close), never mid-response or by a reset; clients that come back after
 * the listener closed are refused at connect. The daemon exits 0 within its bound (the proxy's 10 s drain
 * plus a Machine's 5 s kill timeout) and leaves no Machine process. Restarted from the same data dir, it has
 * the catalog it had (the same log, apps and Machines; only what the supervisor observes moves) and serves.
 * Then the fleet variant: of two edges, the one clients hit is stopped while the other keeps serving.
 */
const MACHINE = join(import.meta.dirname, 'fixtures', 'hard-machine.mjs')
const SHUTDOWN_BOUND_MS = 10_000 + 5_000
const SLOW_MS = 1500
const fleet = new DaemonFleet({ heartbeatMs: 250, downAfterMs: 3000 })
const webToml = `app = "web"\nprimary_region = "ams"\n[[services]]\ninternal_port = 8080\n[services.concurrency]\ntype = "requests"\nsoft_limit = 2000\nhard_limit = 4000\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n[[services.http_checks]]\npath = "/healthz"\ninterval = "2s"\ntimeout = "2s"\ngrace_period = "0s"\n`
// an app whose only Machine is stopped on purpose: nothing should write to its document, shutdown included
const quietToml = 'app = "quiet"\nprimary_region = "ams"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 7000\nhandlers = ["http"]\n'
const webMachines: string[] = []
let quietMachine = ''

beforeAll(async () => {
  await fleet.init()
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge,worker' })
  await fleet.deploy('ams-1', webToml)
  await fleet.deploy('ams-1', quietToml)
  for (let i = 0; i < 2; i++) webMachines.push((await fleet.machine('ams-1', 'web', { node: 'ams-1', cmd: [process.execPath, MACHINE] })).id)
  quietMachine = (await fleet.machine('ams-1', 'quiet', { node: 'ams-1', cmd: ['true'], desired: 'stopped' })).id
  for (const id of webMachines) await fleet.waitMachine('ams-1', id, (m) => m.state === 'started' && m.ready, 'started and ready')
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

/** A third slow (1.5 s at the Machine), a third uploads of 48 KiB, a third fast. */
const path = (i: number): string => (i % 3 === 0 ? `/slow-${i}?ms=${SLOW_MS}` : i % 3 === 1 ? `/upload-${i}` : `/fast-${i}`)
const body = (i: number): Buffer | undefined => (i % 3 === 1 ? Buffer.alloc(48 * 1024, 0x61) : undefined)

/** Busy keep-alive clients, plus a few that idle 400 ms between requests (idle connections at the signal). */
function load(port: number, busy: number): KeepAliveClients[] {
  return [
    startKeepAliveClients({ host: '127.0.0.1', port, hostHeader: 'web.localhost', clients: busy, path, body }),
    startKeepAliveClients({ host: '127.0.0.1', port, hostHeader: 'web.localhost', clients: 3, path: (i) => `/idler-${i}`, gapMs: 400 }),
  ]
}

/** Pids of the Machine processes a worker runs now (its pid files). */
async function machinePids(dataDir: string): Promise<number[]> {
  const root = join(dataDir, 'machines')
  const pids: number[] = []
  for (const id of await readdir(root).catch(() => [] as string[])) {
    const rec = await readFile(join(root, id, 'machine.json'), 'utf8').then((t) => JSON.parse(t) as { pid: number }, () => undefined)
    if (rec !== undefined) pids.push(rec.pid)
  }
  return pids
}

function groupAlive(pid: number): boolean {
  try { process.kill(-pid, 0); return true } catch { return false }
}

/** SIGTERM; resolves with the exit code and how long the process took to exit. */
async function sigterm(name: string): Promise<{ code: number | null; signal: string | null; ms: number; at: number }> {
  const child = fleet.node(name).daemon.child
  const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  const at = performance.now()
  child.kill('SIGTERM')
  const guard = setTimeout(() => child.kill('SIGKILL'), SHUTDOWN_BOUND_MS + 30_000)
  const [code, signal] = await exited
  clearTimeout(guard)
  return { code, signal, ms: performance.now() - at, at }
}

/** What every request and connection came to, for one readable assertion message. */
function tally(requests: RequestRecord[], conns: ConnRecord[]): Record<string, number> {
  const t: Record<string, number> = {}
  for (const r of requests) t[`request ${r.result}`] = (t[`request ${r.result}`] ?? 0) + 1
  for (const c of conns) {
    const k = c.refused !== undefined ? `connect refused ${c.refused}` : `conn ${c.end ?? 'open'}`
    t[k] = (t[k] ?? 0) + 1
  }
  return t
}

/** The shutdown contract, as keep-alive clients see it (shared by both tests). */
function expectCleanShutdown(groups: KeepAliveClients[], sigAt: number, acceptedByProxy: number): void {
  const requests = groups.flatMap((g) => g.requests)
  const conns = groups.flatMap((g) => g.conns)
  const t = tally(requests, conns)
  // every request the proxy read was answered in full, with the right answer
  expect(requests.filter((r) => r.result !== 'ok' && r.result !== 'unanswered'), JSON.stringify(t)).toEqual([])
  expect(requests.filter((r) => r.result === 'ok').length, JSON.stringify(t)).toBe(acceptedByProxy)
  // slow requests were in flight when the signal came, and they were waited for
  const slowInFlight = requests.filter((r) => r.path.startsWith('/slow-') && r.sentAt < sigAt && r.endedAt > sigAt)
  expect(slowInFlight.length).toBeGreaterThanOrEqual(3)
  expect(slowInFlight.every((r) => r.result === 'ok')).toBe(true)
  // an "unanswered" request is one written into a connection the proxy was closing while it was idle (the
  // race every HTTP/1.1 server has, RFC 9112 §9.6): only on a reused connection, only after the signal
  for (const r of requests.filter((x) => x.result === 'unanswered')) {
    expect(r.firstOnConn).toBe(false)
    expect(r.sentAt).toBeGreaterThan(sigAt)
  }
  // keep-alive clients were told to go (Connection: close) or closed while idle; never reset
  expect(requests.filter((r) => r.result === 'ok' && r.connectionClose).length).toBeGreaterThanOrEqual(1)
  expect(conns.filter((c) => c.end === 'reset-while-idle' || c.end === 'reset-with-request-outstanding')).toEqual([])
  // idle keep-alive connections were closed at once, not held until the drain deadline
  expect(conns.filter((c) => c.end === 'server-while-idle').length).toBeGreaterThanOrEqual(1)
  // clients that came back after the listener closed were refused at connect, nothing else
  const refused = conns.filter((c) => c.refused !== undefined)
  expect(refused.length).toBeGreaterThanOrEqual(1)
  expect(refused.every((c) => c.refused === 'ECONNREFUSED' && c.startedAt > sigAt), JSON.stringify(t)).toBe(true)
}

/** The "proxy stopped" line of a daemon's log: how many HTTP requests its proxy read in its whole life. */
function proxyRequestCount(logs: string): number {
  const rec = logRecord(logs, 'proxy stopped') as { stats: { requests: number } }
  return rec.stats.requests
}

const VOLATILE_MACHINE_FIELDS = ['state', 'stateReason', 'stateAt', 'checks', 'ready', 'healthAt'] as const

function stable(m: MachineRecord): Partial<MachineRecord> {
  const copy: Partial<MachineRecord> = { ...m }
  for (const f of VOLATILE_MACHINE_FIELDS) delete copy[f]
  return copy
}

function appDocs(p: CatalogPicture): Record<string, { app: unknown; machines: MachineRecord[] }> {
  return Object.fromEntries(Object.entries(p.records).filter(([id]) => id.startsWith('app:'))) as Record<string, { app: unknown; machines: MachineRecord[] }>
}

test('SIGTERM under keep-alive load: every accepted request answered in full, exit 0 in bound, no Machine left; restart has the same catalog and serves', async () => {
  const ams = fleet.node('ams-1')
  const port = await fleet.publicPort('ams-1', 80)
  const clients = load(port, 12)
  const stopClients = (): Promise<unknown> => Promise.all(clients.map((c) => c.stop()))
  try {
    await new Promise((r) => setTimeout(r, 4000))
    expect(clients.flatMap((c) => c.requests).filter((r) => r.result !== 'ok')).toEqual([]) // healthy before the signal
    const log0 = await readEventLog(ams.api)
    const before = await catalogPicture(ams.api)
    const pids = await machinePids(fleet.dataDir('ams-1'))
    expect(pids).toHaveLength(2)

    const exit = await sigterm('ams-1')
    await new Promise((r) => setTimeout(r, 1000)) // clients keep coming back to a closed port
    await stopClients()

    const logs = ams.daemon.logs()
    const t = tally(clients.flatMap((c) => c.requests), clients.flatMap((c) => c.conns))
    console.log(`SIGTERM: exit ${exit.code} after ${exit.ms.toFixed(0)} ms; ${JSON.stringify(t)}`)
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null })
    expect(exit.ms).toBeLessThan(SHUTDOWN_BOUND_MS)
    expect(logs).not.toContain('drain deadline reached')
    expectCleanShutdown(clients, exit.at, proxyRequestCount(logs))

    // no Machine outlives its daemon, and none is left for the next start to adopt
    for (const pid of pids) expect(groupAlive(pid), `Machine process group ${pid}`).toBe(false)
    expect(await machinePids(fleet.dataDir('ams-1'))).toEqual([])

    // back from the same data dir
    await fleet.restart('ams-1')
    for (const id of webMachines) await fleet.waitMachine('ams-1', id, (m) => m.state === 'started' && m.ready, 'started and ready after the restart')
    const log1 = await readEventLog(ams.api)
    expect(log1.slice(0, log0.length)).toEqual(log0)
    const since = log1.slice(log0.length)
    // what came after: the supervisor observing its Machines stop and start again, health, membership
    const allowed = new Set<CatalogEvent['type']>(['machine.state', 'health.changed', 'node.updated', 'node.left', 'node.joined', 'node.up', 'node.down'])
    expect(since.filter((e) => !allowed.has(e.type))).toEqual([])
    expect(since.filter((e) => e.type === 'machine.state' && e.machineId === quietMachine)).toEqual([])

    const after = await catalogPicture(ams.api)
    expect(after.heads['app:quiet']).toEqual(before.heads['app:quiet']) // untouched document, untouched history
    expect(Object.keys(after.heads)).toEqual(Object.keys(before.heads))
    const [docs0, docs1] = [appDocs(before), appDocs(after)]
    expect(Object.keys(docs1)).toEqual(Object.keys(docs0))
    for (const [id, doc] of Object.entries(docs0)) {
      expect(docs1[id].app, id).toEqual(doc.app)
      expect(docs1[id].machines.map(stable), id).toEqual(doc.machines.map(stable))
    }
    expect(docs1['app:quiet']).toEqual(docs0['app:quiet'])

    // and it serves again, from both Machines
    const again = startTraffic({ origin: `http://127.0.0.1:${await fleet.publicPort('ams-1', 80)}`, host: 'web.localhost', concurrency: 4 })
    await new Promise((r) => setTimeout(r, 2000))
    const served = await again.stop()
    expect(failures(served)).toEqual([])
    expect(served.length).toBeGreaterThan(20)
    expect(new Set(served.map((o) => o.answer?.machine))).toEqual(new Set(webMachines))
  } finally {
    await stopClients()
  }
}, 180_000)

test('fleet: SIGTERM to one of two edges while clients hit both — its accepted requests all answered, the other edge loses nothing', async () => {
  const lhr = await fleet.start({ name: 'lhr-1', region: 'lhr', roles: 'edge' })
  await fleet.waitAllUp()
  await identicalPictures(fleet.all.map((n) => n.api), 30_000)
  const [amsPort, lhrPort] = [await fleet.publicPort('ams-1', 80), await fleet.publicPort('lhr-1', 80)]
  // lhr-1 hosts nothing: its requests cross the backhaul to ams-1's Machines
  let probes = 0
  await waitFor(async () => {
    probes++
    const res = await request(`http://127.0.0.1:${lhrPort}/probe`, { headers: { host: 'web.localhost' } })
    await res.body.dump()
    return res.statusCode === 200
  }, { timeoutMs: 20_000, what: 'lhr-1 routing web over the backhaul' })

  const onLhr = load(lhrPort, 8)
  const onAms = startKeepAliveClients({ host: '127.0.0.1', port: amsPort, hostHeader: 'web.localhost', clients: 4, path, body })
  try {
    await new Promise((r) => setTimeout(r, 4000))
    expect(onLhr.flatMap((c) => c.requests).filter((r) => r.result !== 'ok')).toEqual([])
    const exit = await sigterm('lhr-1')
    await new Promise((r) => setTimeout(r, 1000))
    await Promise.all(onLhr.map((c) => c.stop()))
    await new Promise((r) => setTimeout(r, 1000)) // the survivor, a little longer alone
    await onAms.stop()

    const logs = lhr.daemon.logs()
    console.log(`fleet SIGTERM: lhr-1 exit ${exit.code} after ${exit.ms.toFixed(0)} ms; lhr clients ${JSON.stringify(tally(onLhr.flatMap((c) => c.requests), onLhr.flatMap((c) => c.conns)))}; ams clients ${JSON.stringify(tally(onAms.requests, onAms.conns))}`)
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null })
    expect(exit.ms).toBeLessThan(SHUTDOWN_BOUND_MS)
    expect(logs).not.toContain('drain deadline reached')
    expectCleanShutdown(onLhr, exit.at, proxyRequestCount(logs) - probes)

    // the edge that stayed: every request answered, no connection closed on its clients
    expect(onAms.requests.filter((r) => r.result !== 'ok')).toEqual([])
    expect(onAms.requests.filter((r) => r.sentAt > exit.at).length).toBeGreaterThan(10)
    expect(onAms.conns.filter((c) => c.end !== 'client-stopped')).toEqual([])

    // the fleet knows lhr-1 left; back from its data dir it converges with ams-1 and serves again
    await waitFor(async () => (await getJson<Array<{ name: string; up: boolean }>>(`${fleet.node('ams-1').api}/v1/nodes`)).find((n) => n.name === 'lhr-1')?.up === false,
      { timeoutMs: 15_000, what: 'ams-1 seeing lhr-1 gone' })
    await fleet.restart('lhr-1')
    await fleet.waitAllUp()
    const [a, b] = await identicalPictures(fleet.all.map((n) => n.api), 30_000)
    expect(b.records).toEqual(a.records)
    const again = startTraffic({ origin: `http://127.0.0.1:${await fleet.publicPort('lhr-1', 80)}`, host: 'web.localhost', concurrency: 4 })
    await new Promise((r) => setTimeout(r, 2000))
    const served = await again.stop()
    expect(failures(served)).toEqual([])
    expect(served.length).toBeGreaterThan(20)
  } finally {
    await Promise.all(onLhr.map((c) => c.stop()))
    await onAms.stop()
  }
}, 180_000)

// A Machine that exits the moment it gets kill_signal, in-flight requests or not (many real apps do).
const ABRUPT_MACHINE = `require('node:http').createServer((req, res) => {
  if (req.url === '/healthz') { res.end('ok'); return }
  setTimeout(() => res.end('done ' + req.url), Number(new URL(req.url, 'http://m').searchParams.get('ms') ?? 0))
}).listen(Number(process.env.PORT), process.env.FLY_PRIVATE_IP); process.on('SIGINT', () => process.exit(0))`

test('fleet: SIGTERM to a worker while an edge carries slow requests to its Machines — they complete before its Machines stop', async () => {
  if (!fleet.nodes.has('lhr-1')) await fleet.start({ name: 'lhr-1', region: 'lhr', roles: 'edge' }) // the edge of the test above
  await fleet.start({ name: 'fra-1', region: 'fra', roles: 'worker' })
  await fleet.waitAllUp()
  await fleet.deploy('ams-1', 'app = "brisk"\nprimary_region = "fra"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 7001\nhandlers = ["http"]\n')
  const m = await fleet.machine('ams-1', 'brisk', { node: 'fra-1', cmd: [process.execPath, '-e', ABRUPT_MACHINE] })
  await fleet.waitMachine('lhr-1', m.id, (x) => x.state === 'started' && x.ready, 'started and ready')
  const lhrPort = await fleet.publicPort('lhr-1', 7001)
  await waitFor(async () => {
    const res = await request(`http://127.0.0.1:${lhrPort}/probe`, { headers: { host: 'brisk.localhost' } })
    await res.body.dump()
    return res.statusCode === 200
  }, { timeoutMs: 20_000, what: 'lhr-1 routing brisk to fra-1 over the backhaul' })

  // eight requests that take 2 s at the Machine, in flight over the backhaul when fra-1 is told to stop
  const inFlight = Array.from({ length: 8 }, async (_, i) => {
    const res = await request(`http://127.0.0.1:${lhrPort}/slow-${i}?ms=2000`, { headers: { host: 'brisk.localhost' }, headersTimeout: 20_000, bodyTimeout: 20_000 })
    return { status: res.statusCode, body: await res.body.text() }
  })
  await new Promise((r) => setTimeout(r, 500))
  const exit = await sigterm('fra-1')
  const answers = await Promise.all(inFlight)
  expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null })
  expect(answers).toEqual(Array.from({ length: 8 }, (_, i) => ({ status: 200, body: `done /slow-${i}?ms=2000` })))
}, 120_000)
