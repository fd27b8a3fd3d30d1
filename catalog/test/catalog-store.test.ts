import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest'
import { Level } from 'level'
import { join } from 'node:path'
import { openCatalog } from '../index.js'
import type { Catalog } from '../catalog-api.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { webConfig } from './fixtures.js'

let dir: Awaited<ReturnType<typeof tempDir>>
const open: Catalog[] = []
async function openAt(nodeName = 'ams-1', dataDir = dir.path): Promise<Catalog> {
  const c = await openCatalog({ dataDir, nodeName })
  open.push(c)
  return c
}
async function closeAll(): Promise<void> {
  while (open.length > 0) await open.pop()!.close()
}

/** Snapshot lists in a fixed order: the catalog promises their content, not their order. */
function sorted(s: ReturnType<Catalog['snapshot']>) {
  const by = <T>(key: (x: T) => string) => (a: T, b: T) => key(a).localeCompare(key(b))
  return { ...s, apps: [...s.apps].sort(by((a) => a.name)), machines: [...s.machines].sort(by((m) => m.id)), nodes: [...s.nodes].sort(by((n) => n.name)) }
}

beforeEach(async () => { dir = await tempDir() })
afterEach(async () => {
  await closeAll()
  await dir.remove()
})

describe('writes produce typed events', () => {
  test('a deploy, a Machine and its lifecycle appear as events a consumer can apply', async () => {
    const catalog = await openAt()
    const events: CatalogEvent[] = []
    catalog.subscribe({ fromSeq: 1 }, (e) => events.push(e))

    const app = await catalog.deployApp(webConfig('web'), { hostnames: ['www.example.com'] })
    const m = await catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['node', 'server.js'], env: { A: '1' } } })
    await catalog.reportObserved(m.id, { state: 'starting', reason: 'start requested', privateAddr: '127.66.0.2' })
    await catalog.reportObserved(m.id, { state: 'started', reason: 'process running' })
    await catalog.reportHealth(m.id, { checks: { 'servicecheck-00-http-8080': 'passing' }, ready: true })
    await catalog.setDesiredState(m.id, 'stopped', 'autostop: excess=1')

    expect(app).toMatchObject({ name: 'web', version: 1, hostnames: ['www.example.com'] })
    expect(events.map((e) => e.type)).toEqual([
      'app.upserted', 'machine.upserted', 'machine.state', 'machine.state', 'health.changed', 'machine.upserted',
    ])
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6])
    expect(events.every((e) => e.origin === 'ams-1')).toBe(true)
    expect(events[2]).toMatchObject({ type: 'machine.state', state: 'starting', previous: 'created', privateAddr: '127.66.0.2' })
    expect(events[5]).toMatchObject({ type: 'machine.upserted', machine: { desired: 'stopped', desiredReason: 'autostop: excess=1' } })
    expect(catalog.getMachine(m.id)).toMatchObject({ state: 'started', ready: true, privateAddr: '127.66.0.2', desired: 'stopped' })
  })

  test('an unchanged observed state or health writes nothing', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig())
    const m = await catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
    await catalog.reportObserved(m.id, { state: 'started', reason: 'running', privateAddr: '127.66.0.2' })
    await catalog.reportHealth(m.id, { checks: { c: 'passing' }, ready: true })
    const seq = catalog.lastSeq
    await catalog.reportObserved(m.id, { state: 'started', reason: 'running' })
    await catalog.reportHealth(m.id, { checks: { c: 'passing' }, ready: true })
    expect(catalog.lastSeq).toBe(seq)
  })

  test('removing an app asks for its Machines to be destroyed and removes the app', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig())
    const m = await catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
    const events: CatalogEvent[] = []
    catalog.subscribe({}, (e) => events.push(e))
    await catalog.removeApp('web')
    expect(events.map((e) => e.type)).toEqual(['machine.upserted', 'app.removed'])
    expect(catalog.getApp('web')).toBeUndefined()
    expect(catalog.getMachine(m.id)?.desired).toBe('destroyed')
  })
})

describe('bad input is refused and nothing is written', () => {
  test('invalid Machines and unknown apps are rejected with the field, and the store is unchanged', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig())
    const seq = catalog.lastSeq
    const digest = catalog.digest()

    await expect(catalog.createMachine({ app: 'nope', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } }))
      .rejects.toMatchObject({ code: 'EP_APP_NOT_FOUND', path: 'app' })
    await expect(catalog.createMachine({ app: 'web', region: 'Amsterdam', node: 'ams-1', spec: { cmd: ['x'] } }))
      .rejects.toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'region' })
    await expect(catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'], env: { FLY_REGION: 'x' } } }))
      .rejects.toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'env.FLY_REGION' })
    await expect(catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: {} }))
      .rejects.toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'cmd' })
    const broken = { ...webConfig(), kill_timeout: -1 }
    await expect(catalog.deployApp(broken)).rejects.toMatchObject({ code: 'EP_INVALID_CONFIG', path: 'kill_timeout' })

    expect(catalog.lastSeq).toBe(seq)
    expect(catalog.digest()).toEqual(digest)
  })

  test('a destroyed Machine cannot be started again (409)', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig())
    const m = await catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
    await catalog.setDesiredState(m.id, 'destroyed', 'api')
    const err = await catalog.setDesiredState(m.id, 'started', 'api').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(EdgeProxyError)
    expect(err).toMatchObject({ code: 'EP_MACHINE_DESTROYED', status: 409 })
  })

  test('only the host node may write a Machine\'s observed state and health', async () => {
    const catalog = await openAt('ams-1')
    await catalog.deployApp(webConfig())
    const m = await catalog.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['x'] } })
    await expect(catalog.reportObserved(m.id, { state: 'started', reason: 'x' })).rejects.toMatchObject({ code: 'EP_CONFLICT' })
    await expect(catalog.reportHealth(m.id, { checks: {}, ready: true })).rejects.toMatchObject({ code: 'EP_CONFLICT' })
  })

  test('a data dir belongs to one node name', async () => {
    const first = await openAt('ams-1')
    await first.close()
    open.length = 0
    await expect(openAt('iad-1')).rejects.toMatchObject({ code: 'EP_CONFLICT', message: expect.stringContaining('--name ams-1') })
  })
})

describe('restart', () => {
  test('a reopened data dir has the same documents, heads and records, and seq continues', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig('web'))
    await catalog.deployApp(webConfig('api'))
    // enough changes to one document to pass compaction at least once
    const ids: string[] = []
    for (let i = 0; i < 80; i++) ids.push((await catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })).id)
    await catalog.reportObserved(ids[0], { state: 'started', reason: 'running', privateAddr: '127.66.0.9' })
    const digest = catalog.digest()
    const seq = catalog.lastSeq
    const snapshot = sorted(catalog.snapshot())
    await catalog.close()
    open.length = 0

    const again = await openAt()
    expect(again.digest()).toEqual(digest)
    expect(again.lastSeq).toBe(seq)
    expect(sorted(again.snapshot())).toEqual(snapshot)
    const next = await again.createMachine({ app: 'api', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
    expect(again.lastSeq).toBe(seq + 1)
    expect(again.getMachine(next.id)?.app).toBe('api')
    // the compacted document loads and takes further changes
    await again.reportObserved(ids[1], { state: 'started', reason: 'running', privateAddr: '127.66.0.10' })
    expect(again.getMachine(ids[1])?.privateAddr).toBe('127.66.0.10')
  })
})

describe('quarantine', () => {
  test('corrupt bytes of one document: the node starts, quarantines it, and serves the others', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig('web'))
    await catalog.deployApp(webConfig('api'))
    await catalog.close()
    open.length = 0

    const db = new Level<string, Buffer>(join(dir.path, 'catalog'), { keyEncoding: 'utf8', valueEncoding: 'buffer' })
    await db.put('doc/app:web', Buffer.from('definitely not automerge'))
    await db.close()

    const again = await openAt()
    expect(again.getApp('api')?.name).toBe('api')
    expect(again.getApp('web')).toBeUndefined()
    expect(again.listQuarantined()).toEqual([expect.objectContaining({ docId: 'app:web', reason: expect.stringContaining('corrupt') })])
    expect(again.isQuarantined('app:web')).toBe(true)
    const events: CatalogEvent[] = []
    for await (const e of again.readEvents(1)) events.push(e)
    expect(events.at(-2)).toMatchObject({ type: 'app.removed', app: 'web' })
    expect(events.at(-1)).toMatchObject({ type: 'catalog.quarantined', docId: 'app:web' })
    await expect(again.deployApp(webConfig('web'))).rejects.toMatchObject({ code: 'EP_DOC_QUARANTINED' })
    // still quarantined after another restart
    await again.close()
    open.length = 0
    const third = await openAt()
    expect(third.isQuarantined('app:web')).toBe(true)
    expect(third.getApp('api')?.name).toBe('api')
  })
})

describe('derived events', () => {
  test('node.down and node.up appended without waiting for each other reach the log in the order they were appended', async () => {
    // membership relies on this: it no longer waits for one derived event to be durable before appending the next
    const catalog = await openAt()
    const decided = Array.from({ length: 10 }, (_, i) => i % 2 === 0
      ? { type: 'node.down' as const, node: `n${i >> 1}`, lastSeen: 1_000 + i }
      : { type: 'node.up' as const, node: `n${i >> 1}` })
    await Promise.all(decided.map((e) => catalog.appendDerived(e)))
    await catalog.close()
    open.length = 0

    const again = await openAt()
    const logged: CatalogEvent[] = []
    for await (const e of again.readEvents(1)) if (e.type === 'node.down' || e.type === 'node.up') logged.push(e)
    expect(logged.map((e) => [e.type, 'node' in e ? e.node : undefined])).toEqual(decided.map((e) => [e.type, e.node]))
  })
})

describe('retries', () => {
  test('starting a failed Machine again is a new request, even with the same reason', async () => {
    const catalog = await openAt()
    await catalog.deployApp(webConfig())
    const m = await catalog.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
    await catalog.setDesiredState(m.id, 'started', 'api: start')
    await catalog.reportObserved(m.id, { state: 'failed', reason: 'EP_MACHINE_CRASH_LOOP: exited 5 times' })
    const before = catalog.getMachine(m.id)?.desiredAt as number
    const events: CatalogEvent[] = []
    catalog.subscribe({}, (e) => events.push(e))
    await catalog.setDesiredState(m.id, 'started', 'api: start')
    expect(events.map((e) => e.type)).toEqual(['machine.upserted'])
    expect(catalog.getMachine(m.id)?.desiredAt).toBeGreaterThan(before)
  })
})

describe("this node's own record", () => {
  const self = { name: 'ams-1', region: 'ams', roles: ['edge' as const, 'worker' as const], gossip: [], startedAt: 1, load: { machines: 0, connections: 0 }, version: 'test' }

  test('is rewritten when it changes, and for lastSeen alone only every 2.5–7.5 minutes', async () => {
    // only Date is faked: LevelDB and the write pipeline keep real timers
    vi.useFakeTimers({ toFake: ['Date'] })
    try {
      const t0 = new Date('2026-12-07T12:00:00Z').getTime()
      vi.setSystemTime(t0)
      const catalog = await openAt()
      await catalog.upsertSelf(self)
      const written = () => catalog.getNode('ams-1')?.lastSeen
      expect(written()).toBe(t0)

      // heartbeats call this every 2 s with fresh load: nothing is written for lastSeen within 2.5 minutes
      for (const minutes of [1, 2, 2.49]) {
        vi.setSystemTime(t0 + minutes * 60_000)
        await catalog.upsertSelf({ ...self, load: { machines: 3, connections: 7 } })
        expect(written()).toBe(t0)
      }
      // a real change is written at once
      vi.setSystemTime(t0 + 2.5 * 60_000)
      await catalog.upsertSelf({ ...self, region: 'fra' })
      const changedAt = t0 + 2.5 * 60_000
      expect(catalog.getNode('ams-1')).toMatchObject({ region: 'fra', lastSeen: changedAt })

      // and lastSeen alone once 7.5 minutes have passed at the latest
      vi.setSystemTime(changedAt + 7.5 * 60_000 + 1)
      await catalog.upsertSelf({ ...self, region: 'fra' })
      expect(written()).toBe(changedAt + 7.5 * 60_000 + 1)
    } finally {
      vi.useRealTimers()
    }
  })
})
