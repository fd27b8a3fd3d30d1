import { request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { waitFor } from '../helpers/wait-for.js'
import { identicalPictures, timeToIdenticalHeads } from './helpers/catalog-picture.js'
import { DaemonFleet, getJson } from './helpers/daemon-fleet.js'
import { entityOf, foldLog, payloadOf, readEventLog } from './helpers/event-log.js'

/**
 * Issue 11 item 3 with three real daemons: syd-1 (catalog fsynced) crashes — SIGKILL — right after writes it
 * acknowledged, stays down for minutes while ams-1 and iad-1 keep writing, then restarts from its data dir
 * and catches up. Its event log must then be one unbroken sequence that keeps what it had, and carries every
 * change made elsewhere exactly once.
 *
 * "Duplicated" for a log that is local to each node: seqs are this node's own, so two nodes' logs are never
 * compared entry by entry. What must hold is that each change made anywhere shows up in this node's log as
 * one event — not zero (lost), not two (applied twice, e.g. once from a broadcast and again from a sync, or
 * replayed after the restart). Every write below makes a new entity or changes an old one once, so each has
 * exactly one event that first carries it; and no event repeats the previous one of its entity.
 */
const DOWN_MS = Number(process.env.HARDENING_DOWN_MS ?? 120_000)
const fleet = new DaemonFleet({ heartbeatMs: 500, downAfterMs: 3000, syncIntervalMs: 1000 })
const apis = (): string[] => fleet.all.map((n) => n.api)
const appToml = (name: string): string => `app = "${name}"\nprimary_region = "ams"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`
const BASE_APPS = ['base-0', 'base-1', 'base-2']
const preexisting: MachineRecord[] = []

beforeAll(async () => {
  await fleet.init()
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge,worker', extra: ['--no-fsync'] })
  await fleet.start({ name: 'iad-1', region: 'iad', roles: 'worker', extra: ['--no-fsync'] })
  await fleet.start({ name: 'syd-1', region: 'syd', roles: 'worker' }) // fsync on: a crash loses no acknowledged write
  await fleet.waitAllUp()
  for (const app of BASE_APPS) await fleet.deploy('ams-1', appToml(app))
  for (let i = 0; i < 24; i++) {
    preexisting.push(await fleet.machine('ams-1', BASE_APPS[i % 3], { node: ['ams-1', 'iad-1', 'syd-1'][i % 3], cmd: ['true'], desired: 'stopped' }))
  }
  await timeToIdenticalHeads(apis(), 20_000)
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

interface Writes { apps: string[]; machines: string[]; modified: Map<string, string> }

/** New apps and new Machines through the live nodes, and each pre-existing Machine's desired state changed once. */
async function writeWhile(running: () => boolean, out: Writes, tag: string): Promise<void> {
  const live = ['ams-1', 'iad-1']
  for (let k = 0; running(); k++) {
    const via = live[k % 2]
    if (k % 3 === 0) {
      const name = `${tag}-app-${k}`
      await fleet.deploy(via, appToml(name))
      out.apps.push(name)
    } else if (k % 3 === 1 || out.modified.size >= preexisting.length) {
      const m = await fleet.machine(via, BASE_APPS[k % 3], { node: live[(k >> 1) % 2], cmd: ['true'], desired: 'stopped' })
      out.machines.push(m.id)
    } else {
      const m = preexisting[out.modified.size]
      const res = await request(`${fleet.node(via).api}/v1/machines/${m.id}/suspend`, { method: 'POST' })
      await res.body.dump()
      if (res.statusCode !== 200) throw new Error(`suspend ${m.id} via ${via}: ${res.statusCode}`)
      out.modified.set(m.id, via)
    }
    await new Promise((r) => setTimeout(r, 400))
  }
}

test(`a node down for ${Math.round(DOWN_MS / 1000)} s rejoins and catches up; its event log loses and duplicates nothing`, async () => {
  const syd = fleet.node('syd-1')
  // writes syd-1 itself acknowledged just before it dies
  for (let i = 0; i < 3; i++) await fleet.deploy('syd-1', appToml(`syd-own-${i}`))
  const before = await readEventLog(syd.api)
  await fleet.crash('syd-1')

  const writes: Writes = { apps: [], machines: [], modified: new Map() }
  const downUntil = performance.now() + DOWN_MS
  let writing = true
  const writer = writeWhile(() => writing, writes, 'down')
  await waitFor(() => performance.now() >= downUntil, { timeoutMs: DOWN_MS + 5000, intervalMs: 500, what: 'the downtime to pass' })
  const writtenWhileDown = writes.apps.length + writes.machines.length + writes.modified.size

  // back from its own disk while the others keep writing, then quiet
  await fleet.restart('syd-1')
  await new Promise((r) => setTimeout(r, 5000))
  writing = false
  await writer
  const ms = await timeToIdenticalHeads(apis(), 30_000)
  console.log(`syd-1 down ${DOWN_MS} ms while ${writtenWhileDown} writes were made elsewhere; identical heads ${ms.toFixed(0)} ms after the last write`)
  const [ams, , sydPicture] = await identicalPictures(apis())
  const log = await readEventLog(syd.api)

  // one unbroken sequence from 1, and the part written before the crash is untouched
  expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1))
  expect(log.slice(0, before.length)).toEqual(before)
  for (let i = 0; i < 3; i++) expect(before.some((e) => e.type === 'app.upserted' && e.app.name === `syd-own-${i}`)).toBe(true)

  // each change made elsewhere is in the new part of the log exactly once
  const after = log.slice(before.length)
  const count = (match: (e: CatalogEvent) => boolean): number => after.filter(match).length
  expect(writes.apps.length).toBeGreaterThan(10)
  expect(writes.modified.size).toBeGreaterThan(5)
  for (const app of writes.apps) expect(count((e) => e.type === 'app.upserted' && e.app.name === app), app).toBe(1)
  for (const id of writes.machines) expect(count((e) => e.type === 'machine.upserted' && e.machine.id === id), id).toBe(1)
  for (const id of writes.modified.keys()) {
    expect(count((e) => e.type === 'machine.upserted' && e.machine.id === id && e.machine.desired === 'suspended' && e.machine.desiredReason === 'api: suspend'), id).toBe(1)
  }
  // no event repeats the one before it for the same app or Machine (a change applied twice)
  const last = new Map<string, string>()
  for (const e of log) {
    const entity = entityOf(e)
    if (entity === undefined) continue
    const p = payloadOf(e)
    expect(last.get(entity) === p, `seq ${e.seq} repeats the previous event of ${entity}`).toBe(false)
    last.set(entity, p)
  }

  // nothing lost: the log, folded on its own, is the catalog every node now serves
  const folded = foldLog(log)
  const served = Object.entries(sydPicture.records).filter(([id]) => id.startsWith('app:')) as Array<[string, { app: unknown; machines: MachineRecord[] }]>
  expect(new Set(folded.apps.keys())).toEqual(new Set(served.map(([id]) => id.slice(4))))
  for (const [id, doc] of served) {
    expect(folded.apps.get(id.slice(4))).toEqual(doc.app)
    for (const m of doc.machines) expect(folded.machines.get(m.id)).toEqual(m)
  }
  expect(folded.machines.size).toBe(served.reduce((n, [, d]) => n + d.machines.length, 0))
  expect(sydPicture.records).toEqual(ams.records)
}, DOWN_MS + 180_000)
