import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { type AutoscaleNode, httpAppToml, startAutoscaleNode } from './autoscale-harness.js'

let node: AutoscaleNode | undefined
afterEach(async () => {
  await node?.stop()
  node = undefined
})

async function events(n: AutoscaleNode, app: string): Promise<CatalogEvent[]> {
  const out: CatalogEvent[] = []
  for await (const e of n.daemon.catalog.readEvents(1)) {
    if ((e.type === 'machine.state' || e.type === 'machine.upserted') && (e.type === 'machine.state' ? e.app : e.machine.app) === app) out.push(e)
  }
  return out
}

const running = (n: AutoscaleNode, app: string) => n.daemon.catalog.listMachines({ app }).filter((m) => m.state === 'started' && m.desired === 'started')

test('autostop stops idle Machines one per pass down to min_machines_running in the primary region, and no further', async () => {
  node = await startAutoscaleNode({ autostopIntervalMs: 1000 })
  const n = node
  await n.deploy(httpAppToml('idle', { autoStop: 'stop', min: 1 }))
  const machines = await n.machines('idle', 3, { desired: 'started' })

  await waitFor(() => n.daemon.catalog.listMachines({ app: 'idle' }).filter((m) => m.state === 'stopped').length === 2, { timeoutMs: 10_000, what: 'two Machines stopped' })
  const passesAtFloor = n.autoscale().autostop!.passes
  await waitFor(() => n.autoscale().autostop!.passes >= passesAtFloor + 3, { timeoutMs: 10_000, what: 'three more passes' })

  expect(running(n, 'idle')).toHaveLength(1)
  const stopped = n.daemon.catalog.listMachines({ app: 'idle' }).filter((m) => m.state === 'stopped')
  expect(stopped.every((m) => /^autostop: excess=[12]$/.test(m.stateReason ?? ''))).toBe(true)
  expect(n.autoscale().autostop).toMatchObject({ stopped: 2, cordoned: 2, abandoned: 0 })
  // one Machine per pass: the two stops were decided in different passes. The excess goes 2 → 1 when all three
  // were running at the first pass; a pass that runs while the third is still booting sees excess 1 twice.
  const stopping = (await events(n, 'idle')).filter((e) => e.type === 'machine.state' && e.state === 'stopping')
  const excess = stopping.map((e) => Number(/excess=(\d+)/.exec(e.type === 'machine.state' ? e.reason ?? '' : '')?.[1]))
  expect(excess).toHaveLength(2)
  expect(excess[0]).toBeGreaterThanOrEqual(excess[1])
  expect(excess[1]).toBe(1)
  expect(stopping[1].ts - stopping[0].ts).toBeGreaterThan(500)
  expect(machines.map((m) => m.id)).toContain(running(n, 'idle')[0].id)
})

test('a long request in flight on the Machine chosen for autostop completes before the Machine stops', async () => {
  node = await startAutoscaleNode({ autostopIntervalMs: 1000, drainMs: 8000 })
  const n = node
  // min 2 while the requests get going: a pass between the Machines' start and the requests would otherwise
  // drain one of the two idle Machines, and both requests would land on the other (CI saw that once)
  await n.deploy(httpAppToml('busy', { autoStop: 'stop', min: 2 }))
  await n.machines('busy', 2, { desired: 'started' })

  // one long request on each Machine (least loaded first)
  const slow = () => request(n.url(80, '/slow?ms=2500'), { headers: { host: 'busy.localhost' } }).then(async (res) => {
    const body = (await res.body.json()) as { machine: string }
    return { status: res.statusCode, machine: body.machine, doneAt: Date.now() }
  })
  const inFlight = Promise.all([slow(), slow()])
  await waitFor(() => {
    const busy = n.daemon.proxy!.loads().loads.filter((l) => l.app === 'busy' && l.load > 0)
    return busy.length === 2 ? busy : undefined
  }, { timeoutMs: 2000, intervalMs: 10, what: 'a request in flight on each Machine' })
  // now one Machine is excess: the next pass finds excess=1 and drains one of them, its request still in flight
  await n.deploy(httpAppToml('busy', { autoStop: 'stop', min: 1 }))
  const answers = await inFlight

  expect(answers.map((a) => a.status)).toEqual([200, 200])
  expect(new Set(answers.map((a) => a.machine)).size).toBe(2)
  const [stopped] = await waitFor(() => {
    const s = n.daemon.catalog.listMachines({ app: 'busy' }).filter((m) => m.state === 'stopped')
    return s.length === 1 ? s : undefined
  }, { timeoutMs: 10_000, what: 'one Machine stopped' })
  expect(stopped.stateReason).toBe('autostop: excess=1')
  const its = answers.find((a) => a.machine === stopped.id)!
  const log = await events(n, 'busy')
  const cordoned = log.find((e) => e.type === 'machine.upserted' && e.machine.id === stopped.id && e.machine.cordoned)
  const stopping = log.find((e) => e.type === 'machine.state' && e.machineId === stopped.id && e.state === 'stopping')
  // cordoned while its request was in flight, stopped only after that request was answered
  expect(cordoned!.ts).toBeLessThan(its.doneAt)
  expect(stopping!.ts).toBeGreaterThanOrEqual(its.doneAt - 50)
  expect(n.autoscale().autostop).toMatchObject({ drainTimeouts: 0, stopped: 1 })
  expect(running(n, 'busy')).toHaveLength(1)
})

test('an idle Machine with auto_stop_machines = "suspend" is suspended, and the next request resumes the same process', async () => {
  node = await startAutoscaleNode({ autostopIntervalMs: 1000 })
  const n = node
  await n.deploy(httpAppToml('nap', { autoStop: 'suspend' }))
  const [m] = await n.machines('nap', 1, { desired: 'started' })
  const before = await request(n.url(80), { headers: { host: 'nap.localhost' } })
  const { pid } = (await before.body.json()) as { pid: number }

  const suspended = await n.waitMachine(m.id, (x) => x.state === 'suspended', 'suspended', 10_000)
  expect(suspended.stateReason).toBe('autostop: idle')

  const res = await request(n.url(80), { headers: { host: 'nap.localhost' } })
  expect(res.statusCode).toBe(200)
  const body = (await res.body.json()) as { machine: string; pid: number }
  expect(body).toMatchObject({ machine: m.id, pid })
  const requestId = res.headers['fly-request-id'] as string
  const resumed = (await events(n, 'nap')).find((e) => e.type === 'machine.state' && e.previous === 'suspended' && e.state === 'started')
  expect(resumed).toMatchObject({ reason: `autostart: request ${requestId}` })
})
