import { join } from 'node:path'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { DaemonFleet, getJson, metric } from './helpers/daemon-fleet.js'
import { readEventLog } from './helpers/event-log.js'

/**
 * Issue 11 item 14: a burst against an app scaled to zero — every request answered, one start per needed
 * Machine. Two real daemons in one region, ams-1 and ams-2 (both edge + worker). Each app has six Machines,
 * none running, and `hard_limit = soft_limit = 50`; a burst of 200 concurrent requests that each take 3 s
 * therefore needs exactly ceil(200 / 50) = 4 Machines. The Machine (helpers/c-burst-machine.mjs) opens its
 * port a second before it is ready and counts any request that arrives before then.
 *
 * - stopped Machines, the burst through one edge: 200 × 200, exactly 4 started (4 `autostart:` starts in the
 *   host's event log, one per Machine), no request before a Machine's readiness, never more than hard_limit
 *   at once on a Machine, the other 2 still stopped;
 * - suspended Machines (auto_stop_machines = "suspend"): the same, and the 4 are resumed (same process);
 * - stopped Machines on both nodes, the burst split over both edges at once: 200 × 200, each Machine started
 *   at most once, between 2 (each edge's share) and 4 (the whole burst) started, none early.
 */
const MACHINE = join(import.meta.dirname, 'helpers', 'c-burst-machine.mjs')
const HARD_LIMIT = 50
const BURST = 200
const HOLD_MS = 3000
const READY_AFTER_MS = 1000
const MACHINES = 6
const NEEDED = Math.ceil(BURST / HARD_LIMIT)

const fleet = new DaemonFleet()

const toml = (app: string, autoStop: 'stop' | 'suspend'): string => `app = "${app}"
primary_region = "ams"
[[services]]
internal_port = 8080
protocol = "tcp"
auto_start_machines = true
auto_stop_machines = "${autoStop}"
[services.concurrency]
type = "requests"
soft_limit = ${HARD_LIMIT}
hard_limit = ${HARD_LIMIT}
[[services.ports]]
port = 80
handlers = ["http"]
[[services.http_checks]]
path = "/healthz"
interval = "1s"
timeout = "1s"
grace_period = "0s"
`

beforeAll(async () => {
  await fleet.init()
  // a long autostop interval: the Machines started by a burst must not be stopped while it is checked
  const extra = ['--no-fsync', '--autostop-interval-ms', '600000']
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge,worker', extra })
  await fleet.start({ name: 'ams-2', region: 'ams', roles: 'edge,worker', extra })
  await fleet.waitAllUp()
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

/** `count` stopped Machines of `app` on each of `nodes`, as the catalog on both edges shows them. */
async function stoppedMachines(app: string, nodes: string[], count: number): Promise<MachineRecord[]> {
  const out: MachineRecord[] = []
  for (const node of nodes) {
    for (let i = 0; i < count; i++) {
      out.push(await fleet.machine('ams-1', app, { node, cmd: [process.execPath, MACHINE], env: { READY_AFTER_MS: String(READY_AFTER_MS) }, desired: 'stopped' }))
    }
  }
  for (const edge of ['ams-1', 'ams-2']) {
    for (const m of out) await fleet.waitMachine(edge, m.id, (x) => x.state === 'stopped' && x.desired === 'stopped', 'stopped')
  }
  return out
}

interface BurstResult { status: number | undefined; machine: string | undefined; error: string | undefined }

/** `n` requests at once (one connection each) to an edge; resolves when every one has its answer. */
async function burst(edge: string, app: string, n: number): Promise<BurstResult[]> {
  const origin = `http://127.0.0.1:${await fleet.publicPort(edge, 80)}`
  const agent = new Agent({ connections: n, pipelining: 1 })
  try {
    return await Promise.all(Array.from({ length: n }, async (_, i): Promise<BurstResult> => {
      try {
        const res = await request(`${origin}/slow/${i}?ms=${HOLD_MS}`, {
          dispatcher: agent, headers: { host: `${app}.localhost` }, headersTimeout: 90_000, bodyTimeout: 30_000,
        })
        const text = await res.body.text()
        if (res.statusCode !== 200) return { status: res.statusCode, machine: undefined, error: `${String(res.headers['edgeproxy-error'] ?? '')} ${text.slice(0, 300)}` }
        return { status: 200, machine: (JSON.parse(text) as { machine: string }).machine, error: undefined }
      } catch (err) {
        return { status: undefined, machine: undefined, error: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}` }
      }
    }))
  } finally {
    await agent.close()
  }
}

interface Stats { machine: string; pid: number; served: number; early: number; maxInflight: number; readyAt: number; firstRequestAt: number }

async function statsOf(edge: string, id: string): Promise<Stats> {
  const m = await getJson<MachineRecord>(`${fleet.node(edge).api}/v1/machines/${id}`)
  return await getJson<Stats>(`http://${m.privateAddr}:8080/__stats`)
}

/** The newest event seq of every node, so that only the burst's events are counted afterwards. */
async function eventMarks(): Promise<Map<string, number>> {
  const marks = new Map<string, number>()
  for (const n of fleet.all) marks.set(n.spec.name, (await readEventLog(n.api)).at(-1)?.seq ?? 0)
  return marks
}

/**
 * Starts (stopped → starting, or suspended → started) of the app's Machines since `marks`, per Machine, from
 * the log of the node that hosts it (the supervisor there writes these transitions), with their reasons.
 */
async function startsSince(marks: Map<string, number>, machines: MachineRecord[]): Promise<Map<string, string[]>> {
  const starts = new Map<string, string[]>()
  for (const n of fleet.all) {
    const hosted = new Set(machines.filter((m) => m.node === n.spec.name).map((m) => m.id))
    const events = await readEventLog(n.api, (marks.get(n.spec.name) ?? 0) + 1)
    for (const e of events as CatalogEvent[]) {
      if (e.type !== 'machine.state' || !hosted.has(e.machineId)) continue
      const leaves = e.previous === 'stopped' || e.previous === 'suspended' || e.previous === 'created'
      const wakes = e.state === 'starting' || e.state === 'started'
      if (!leaves || !wakes) continue
      starts.set(e.machineId, [...starts.get(e.machineId) ?? [], e.reason])
    }
  }
  return starts
}

async function autostartsCounted(): Promise<number> {
  let total = 0
  for (const n of fleet.all) total += metric(await (await request(`${n.api}/metrics`)).body.text(), 'edgeproxy_autostart_starts_total')
  return total
}

function summary(results: BurstResult[]): Array<{ status: number | undefined; error: string | undefined }> {
  return results.filter((r) => r.status !== 200 || r.machine === undefined).slice(0, 5).map((r) => ({ status: r.status, error: r.error }))
}

test(`${BURST} concurrent requests through one edge at ${MACHINES} stopped Machines: all 200, exactly ${NEEDED} started, none before it was ready`, async () => {
  await fleet.deploy('ams-1', toml('cold', 'stop'))
  const machines = await stoppedMachines('cold', ['ams-1'], MACHINES)
  const marks = await eventMarks()
  const countedBefore = await autostartsCounted()

  const t0 = performance.now()
  const results = await burst('ams-1', 'cold', BURST)
  const seconds = (performance.now() - t0) / 1000

  expect(summary(results)).toEqual([])
  const starts = await startsSince(marks, machines)
  const started = [...starts.keys()]
  const stats = await Promise.all(started.map((id) => statsOf('ams-1', id)))
  console.log(`cold burst: ${BURST} answered in ${seconds.toFixed(1)} s; started ${started.length} of ${MACHINES}; per Machine served ${stats.map((s) => s.served).join('/')}, max in flight ${stats.map((s) => s.maxInflight).join('/')}, early ${stats.map((s) => s.early).join('/')}`)

  // exactly the Machines the load needs, each started once, each for a request
  expect(started.length).toBe(NEEDED)
  for (const [id, reasons] of starts) {
    expect(reasons, `Machine ${id}`).toHaveLength(1)
    expect(reasons[0]).toMatch(/^autostart: request /)
  }
  expect(await autostartsCounted() - countedBefore).toBe(NEEDED)
  // every answer came from a Machine that was started for the burst
  expect(new Set(results.map((r) => r.machine))).toEqual(new Set(started))
  // ready means ready: no request reached a Machine before its check passed; hard_limit held per Machine
  for (const s of stats) {
    expect(s.early, `Machine ${s.machine}`).toBe(0)
    expect(s.firstRequestAt).toBeGreaterThanOrEqual(s.readyAt)
    expect(s.maxInflight).toBeLessThanOrEqual(HARD_LIMIT)
  }
  expect(stats.reduce((a, s) => a + s.served, 0)).toBe(BURST)
  // the rest stayed stopped
  for (const m of machines.filter((x) => !starts.has(x.id))) {
    const now = await getJson<MachineRecord>(`${fleet.node('ams-1').api}/v1/machines/${m.id}`)
    expect(now.state, `Machine ${m.id}`).toBe('stopped')
  }
})

test(`${BURST} concurrent requests at ${MACHINES} suspended Machines: all 200, exactly ${NEEDED} resumed (same processes)`, async () => {
  await fleet.deploy('ams-1', toml('frozen', 'suspend'))
  const machines: MachineRecord[] = []
  for (let i = 0; i < MACHINES; i++) {
    machines.push(await fleet.machine('ams-1', 'frozen', { node: 'ams-1', cmd: [process.execPath, MACHINE], env: { READY_AFTER_MS: String(READY_AFTER_MS) } }))
  }
  const pids = new Map<string, number>()
  for (const m of machines) {
    await fleet.waitMachine('ams-1', m.id, (x) => x.state === 'started' && x.ready, 'started and ready', 60_000)
    pids.set(m.id, (await statsOf('ams-1', m.id)).pid)
    const res = await request(`${fleet.node('ams-1').api}/v1/machines/${m.id}/suspend`, { method: 'POST' })
    await res.body.dump()
    expect(res.statusCode).toBe(200)
  }
  for (const edge of ['ams-1', 'ams-2']) {
    for (const m of machines) await fleet.waitMachine(edge, m.id, (x) => x.state === 'suspended' && !x.ready, 'suspended')
  }
  const marks = await eventMarks()

  const t0 = performance.now()
  const results = await burst('ams-1', 'frozen', BURST)
  const seconds = (performance.now() - t0) / 1000

  expect(summary(results)).toEqual([])
  const starts = await startsSince(marks, machines)
  const resumed = [...starts.keys()]
  const stats = await Promise.all(resumed.map((id) => statsOf('ams-1', id)))
  console.log(`suspended burst: ${BURST} answered in ${seconds.toFixed(1)} s; resumed ${resumed.length} of ${MACHINES}; per Machine served ${stats.map((s) => s.served).join('/')}, max in flight ${stats.map((s) => s.maxInflight).join('/')}`)

  expect(resumed.length).toBe(NEEDED)
  for (const [id, reasons] of starts) {
    expect(reasons, `Machine ${id}`).toHaveLength(1)
    expect(reasons[0]).toMatch(/^autostart: request /)
  }
  expect(new Set(results.map((r) => r.machine))).toEqual(new Set(resumed))
  for (const s of stats) {
    expect(s.pid, `Machine ${s.machine} was resumed, not started again`).toBe(pids.get(s.machine))
    expect(s.early).toBe(0)
    expect(s.maxInflight).toBeLessThanOrEqual(HARD_LIMIT)
  }
  expect(stats.reduce((a, s) => a + s.served, 0)).toBe(BURST)
  for (const m of machines.filter((x) => !starts.has(x.id))) {
    const now = await getJson<MachineRecord>(`${fleet.node('ams-1').api}/v1/machines/${m.id}`)
    expect(now.state, `Machine ${m.id}`).toBe('suspended')
  }
})

test(`${BURST} concurrent requests split over two edges at once: all 200, no Machine started twice, no more started than the burst needs`, async () => {
  await fleet.deploy('ams-1', toml('split', 'stop'))
  const machines = await stoppedMachines('split', ['ams-1', 'ams-2'], MACHINES / 2)
  const marks = await eventMarks()

  const t0 = performance.now()
  const [a, b] = await Promise.all([burst('ams-1', 'split', BURST / 2), burst('ams-2', 'split', BURST / 2)])
  const seconds = (performance.now() - t0) / 1000
  const results = [...a, ...b]

  expect(summary(results)).toEqual([])
  const starts = await startsSince(marks, machines)
  const started = [...starts.keys()]
  const stats = await Promise.all(started.map((id) => statsOf('ams-1', id)))
  console.log(`split burst: ${BURST} answered in ${seconds.toFixed(1)} s; started ${started.length} of ${MACHINES} (${started.map((id) => machines.find((m) => m.id === id)!.node).join(', ')}); per Machine served ${stats.map((s) => s.served).join('/')}, max in flight ${stats.map((s) => s.maxInflight).join('/')}`)

  // each edge needs ceil(100 / 50) = 2 for its share and may join the other's starts; together never more than 4
  expect(started.length).toBeGreaterThanOrEqual(Math.ceil(BURST / 2 / HARD_LIMIT))
  expect(started.length).toBeLessThanOrEqual(NEEDED)
  for (const [id, reasons] of starts) {
    expect(reasons, `Machine ${id}`).toHaveLength(1)
    expect(reasons[0]).toMatch(/^autostart: request /)
  }
  // every answer came from a Machine started for the burst. (One an edge started may end up serving nothing:
  // its requests went to a Machine the other edge had started, which became ready first — still within 4.)
  expect([...new Set(results.map((r) => r.machine))].filter((id) => !starts.has(id!))).toEqual([])
  for (const s of stats) {
    expect(s.early, `Machine ${s.machine}`).toBe(0)
    if (s.firstRequestAt > 0) expect(s.firstRequestAt).toBeGreaterThanOrEqual(s.readyAt)
    // hard_limit is each edge's own count (FLY-SPEC §3): two edges may each fill it
    expect(s.maxInflight).toBeLessThanOrEqual(2 * HARD_LIMIT)
  }
  expect(stats.reduce((a2, s) => a2 + s.served, 0)).toBe(BURST)
})
