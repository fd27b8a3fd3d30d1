import { afterEach, beforeEach, expect, test } from 'vitest'
import * as A from '@automerge/automerge'
import { join } from 'node:path'
import { openCatalog } from '../index.js'
import type { Catalog, PeerSyncState } from '../catalog-api.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { DocId } from '../../schemas/catalog-records.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { webConfig } from './fixtures.js'
import { BACKGROUND_PER_GROUP } from '../write-pipeline.js'

let dir: Awaited<ReturnType<typeof tempDir>>
const open: Catalog[] = []
async function node(name: string): Promise<Catalog> {
  const c = await openCatalog({ dataDir: join(dir.path, name), nodeName: name })
  open.push(c)
  return c
}

beforeEach(async () => { dir = await tempDir() })
afterEach(async () => {
  while (open.length > 0) await open.pop()!.close()
  await dir.remove()
})

/** Forwards every local change of `from` to `to`, as gossip's broadcast does. */
function wire(from: Catalog, to: Catalog): Promise<unknown>[] {
  const pending: Promise<unknown>[] = []
  from.onLocalChange((docId, changes) => { pending.push(to.applyRemoteChanges(docId, changes, from.nodeName)) })
  return pending
}

/** Deploys `count` apps on `a` and returns each app document with all its changes, as a sync session would push them. */
async function deployedForPush(a: Catalog, count: number): Promise<Array<[DocId, Uint8Array[]]>> {
  const pushes: Array<[DocId, Uint8Array[]]> = []
  for (let i = 0; i < count; i++) {
    await a.deployApp(webConfig(`app-${i}`))
    pushes.push([`app:app-${i}` as DocId, (await a.changesForPeer(`app:app-${i}` as DocId, undefined))!])
  }
  return pushes
}

/** Runs the Automerge sync protocol for one document between two catalogs until neither has more to say. */
async function syncDoc(a: Catalog, b: Catalog, docId: DocId): Promise<number> {
  const sa: PeerSyncState = a.newSyncState(docId)
  const sb: PeerSyncState = b.newSyncState(docId)
  for (let round = 1; round <= 20; round++) {
    const ma = await a.generateSyncMessage(sa)
    if (ma !== null) await b.receiveSyncMessage(sb, ma, a.nodeName)
    const mb = await b.generateSyncMessage(sb)
    if (mb !== null) await a.receiveSyncMessage(sa, mb, b.nodeName)
    if (ma === null && mb === null) return round
  }
  throw new Error('sync did not finish in 20 rounds')
}

test('local changes applied on a replica give the same heads and the same records, with the origin node', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  const pending = wire(a, b)
  const seen: CatalogEvent[] = []
  b.subscribe({ fromSeq: 1 }, (e) => seen.push(e))

  await a.deployApp(webConfig('web'))
  const m = await a.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
  await a.reportObserved(m.id, { state: 'started', reason: 'running', privateAddr: '127.66.0.3' })
  await Promise.all(pending)

  expect(b.digest()).toEqual(a.digest())
  expect(b.getMachine(m.id)).toEqual(a.getMachine(m.id))
  expect(seen.map((e) => [e.type, e.origin])).toEqual([['app.upserted', 'ams-1'], ['machine.upserted', 'ams-1'], ['machine.state', 'ams-1']])
})

test('the same app created on two nodes apart merges into one document with both Machines', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  await b.deployApp(webConfig('web'))
  const ma = await a.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
  const mb = await b.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['x'] } })

  const rounds = await syncDoc(a, b, 'app:web')

  expect(rounds).toBeLessThanOrEqual(4)
  expect(a.digest()).toEqual(b.digest())
  expect(a.listMachines({ app: 'web' }).map((m) => m.id).sort()).toEqual([ma.id, mb.id].sort())
  expect(b.listMachines({ app: 'web' }).map((m) => m.id).sort()).toEqual([ma.id, mb.id].sort())
})

test('sync brings a document the node never had, and concurrent writers on both sides converge', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  const m = await a.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['x'] } })
  await syncDoc(a, b, 'app:web')
  // the host reports while the control plane changes the desired state: disjoint writers
  await b.reportObserved(m.id, { state: 'started', reason: 'running', privateAddr: '127.66.0.4' })
  await a.setDesiredState(m.id, 'stopped', 'autostop: excess=1')
  await syncDoc(a, b, 'app:web')

  for (const c of [a, b]) expect(c.getMachine(m.id)).toMatchObject({ state: 'started', desired: 'stopped', privateAddr: '127.66.0.4' })
  expect(a.digest()).toEqual(b.digest())
})

test('a document a sync has begun to bring takes a local write from the shared root: both writers\' records survive the merge', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  const ma = await a.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['a'] } })
  // b starts a sync of a document it lacks (held empty until the sync brings it), then deploys the same app itself
  const sb = b.newSyncState('app:web')
  expect(await b.generateSyncMessage(sb)).not.toBeNull()
  await b.deployApp(webConfig('web'))
  const mb = await b.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['b'] } })

  await syncDoc(a, b, 'app:web')
  expect(a.digest()).toEqual(b.digest())
  for (const c of [a, b]) expect(c.listMachines({ app: 'web' }).map((m) => m.id).sort()).toEqual([ma.id, mb.id].sort())
})

test('changesForPeer gives exactly what a peer behind lacks, everything to a peer without the document, nothing when the peer is ahead', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  const everything = await a.changesForPeer('app:web', undefined)
  // a node that never had the document builds it from these alone: the root change travels with them
  await b.applyRemoteChanges('app:web', everything!, 'ams-1')
  expect(b.digest()).toEqual(a.digest())
  expect(b.getApp('web')).toEqual(a.getApp('web'))

  const behind = a.digest().get('app:web')!
  await a.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['x'] } })
  const delta = await a.changesForPeer('app:web', behind)
  expect(delta).toHaveLength(1)
  await b.applyRemoteChanges('app:web', delta!, 'ams-1')
  expect(b.digest()).toEqual(a.digest())

  await b.reportObserved(b.listMachines({ app: 'web' })[0].id, { state: 'started', reason: 'running', privateAddr: '127.66.0.4' })
  expect(await a.changesForPeer('app:web', b.digest().get('app:web'))).toBeUndefined()
  expect(await a.changesForPeer('app:nope', undefined)).toBeUndefined()
})

test('a write made the moment a peer\'s changes are applied is written at once, not left until the next write', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  const m = await a.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['x'] } })
  await b.applyRemoteChanges('app:web', (await a.changesForPeer('app:web', undefined))!, 'ams-1')
  // resumed on the applied result, the next write reaches the pipeline before the drain that applied it settles
  const written = b.reportObserved(m.id, { state: 'started', reason: 'running', privateAddr: '127.66.0.4' })
  const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('the write was left waiting')), 2_000).unref())
  await Promise.race([written, deadline])
  expect(b.getMachine(m.id)?.state).toBe('started')
})

test('a sync round\'s message is applied ahead of a backlog of pushed documents: the partner waiting on it is not kept behind them', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('shared'))
  const pushes = await deployedForPush(a, 40)
  const order: string[] = []
  const applied = pushes.map(([docId, changes]) => b.applyRemoteChanges(docId, changes, 'ams-1').then(() => order.push(docId)))
  // the first round of a sync of the shared app, sent while the 40 pushes are still queued
  const message = (await a.generateSyncMessage(a.newSyncState('app:shared')))!
  const round = b.receiveSyncMessage(b.newSyncState('app:shared'), message, 'ams-1').then(() => order.push('round'))
  await Promise.all([...applied, round])
  expect(order.indexOf('round')).toBeLessThan(pushes.length / 2)
  expect(b.digest().get('app:app-39')).toEqual(a.digest().get('app:app-39'))
})

test('pushed documents applied in the background leave room for other writes: a deploy made behind 64 of them is not kept waiting for all', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  const pushes = await deployedForPush(a, 64)
  const order: string[] = []
  const applied = pushes.map(([docId, changes]) => b.applyRemoteChanges(docId, changes, 'ams-1', 'background').then(() => order.push(docId)))
  const deployed = b.deployApp(webConfig('local')).then(() => order.push('local'))
  await Promise.all([...applied, deployed])
  // normal ops go first in a group: the deploy waits at most behind the first push (an idle pipeline wrote it
  // alone) and the one group of them being written when it came
  expect(order.indexOf('local')).toBeLessThanOrEqual(1 + BACKGROUND_PER_GROUP)
  expect(BACKGROUND_PER_GROUP).toBeLessThan(64)
  expect(b.digest().size).toBe(65)
})

test('pushed documents handed over together are written in at most two batches: the first alone, the rest together', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  const pushes = await deployedForPush(a, 20)
  // what a peer polling b's digest sees as each app appears: a state per batch (eight to a batch made it four)
  const seen: string[] = []
  b.subscribe({}, (e) => { if (e.type === 'app.upserted') seen.push(Buffer.from(b.digestHash()).toString('hex')) })
  await Promise.all(pushes.map(([docId, changes]) => b.applyRemoteChanges(docId, changes, 'ams-1', 'background')))
  expect(seen).toHaveLength(20)
  expect(new Set(seen).size).toBeLessThanOrEqual(2)
})

test('reading a document for a peer while a peer\'s change to it is applied never touches the copy that change replaced', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  await syncDoc(a, b, 'app:web')
  const tick = async (hops: number) => { for (let i = 0; i < hops; i++) await Promise.resolve() }
  for (let version = 1; version <= 12; version++) {
    const before = a.digest().get('app:web')!
    await a.deployApp(webConfig('web', `[env]\nVERSION = "${version}"\n`))
    const changes = (await a.changesForPeer('app:web', before))!
    // the write replaces b's loaded copy a few microtasks in; the reads start at every offset around it
    const applied = b.applyRemoteChanges('app:web', changes, 'ams-1')
    const reads = Array.from({ length: 10 }, async (_, hops) => {
      await tick(hops)
      const [all, message] = await Promise.all([b.changesForPeer('app:web', undefined), b.generateSyncMessage(b.newSyncState('app:web'))])
      return { all, message }
    })
    await applied
    for (const r of await Promise.all(reads)) {
      expect(r.all!.length).toBeGreaterThan(0)
      expect(r.message).not.toBeNull()
    }
  }
  expect(b.getApp('web')?.config.env.VERSION).toBe('12')
})

test('changes whose dependencies are missing are reported so that a sync can follow', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  const captured: Uint8Array[] = []
  a.onLocalChange((_docId, changes) => captured.push(...changes))
  await a.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })

  const r = await b.applyRemoteChanges('app:web', captured, 'ams-1')
  expect(r.missingDeps).toBe(true)
  expect(b.getApp('web')).toBeUndefined()
  await syncDoc(a, b, 'app:web')
  expect(b.listMachines({ app: 'web' })).toHaveLength(1)
})

test('invalid bytes from a peer are refused without touching the store', async () => {
  const b = await node('iad-1')
  const seq = b.lastSeq
  await expect(b.applyRemoteChanges('app:web', [new Uint8Array([1, 2, 3, 4])], 'evil')).rejects.toMatchObject({ code: 'EP_INVALID_REQUEST' })
  await expect(b.applyRemoteChanges('../etc' as DocId, [], 'evil')).rejects.toMatchObject({ code: 'EP_INVALID_REQUEST' })
  await expect(b.receiveSyncMessage(b.newSyncState('app:web'), new Uint8Array([9, 9, 9]), 'evil')).rejects.toMatchObject({ code: 'EP_INVALID_REQUEST' })
  expect(b.lastSeq).toBe(seq)
  expect(b.digest().size).toBe(0)
})

test('a poison change (valid bytes, invalid record) is refused; its document stays as it was and keeps being served', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  await a.deployApp(webConfig('web'))
  await a.deployApp(webConfig('api'))
  await syncDoc(a, b, 'app:web')
  await syncDoc(a, b, 'app:api')

  // a peer writes a Machine whose record breaks the schema, straight through Automerge
  const [evil] = A.applyChanges(A.init<Record<string, any>>({ actor: 'ee' }), await changesVia(a, 'app:web')) // eslint-disable-line @typescript-eslint/no-explicit-any
  const poisoned = A.change(evil, (d) => { d.machines['zzzzzzzzzzzzzz'] = { meta: new A.ImmutableString('{"id":"not-an-id"}') } })
  const change = A.getLastLocalChange(poisoned) as Uint8Array
  const events: CatalogEvent[] = []
  b.subscribe({}, (e) => events.push(e))

  const heads = b.digest().get('app:web')
  await expect(b.applyRemoteChanges('app:web', [change], 'evil-1')).rejects.toMatchObject({ code: 'EP_GOSSIP_MESSAGE_INVALID' })

  expect(b.isQuarantined('app:web')).toBe(false)
  expect(b.digest().get('app:web')).toEqual(heads)
  expect(b.getApp('web')?.name).toBe('web')
  expect(b.getApp('api')?.name).toBe('api')
  expect(events).toEqual([])
  // the document keeps taking good changes, and so do the others
  const pending = wire(a, b)
  await a.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
  await a.createMachine({ app: 'api', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
  await Promise.all(pending)
  expect(b.listMachines({ app: 'web' })).toHaveLength(1)
  expect(b.listMachines({ app: 'api' })).toHaveLength(1)
})

async function changesVia(c: Catalog, docId: DocId): Promise<Uint8Array[]> {
  // replay a fresh sync into a bare Automerge document to obtain the full history as changes
  let doc = A.init<unknown>()
  let mine = A.initSyncState()
  const theirs = c.newSyncState(docId)
  for (let i = 0; i < 10; i++) {
    const msg = await c.generateSyncMessage(theirs)
    if (msg !== null) [doc, mine] = A.receiveSyncMessage(doc, mine, msg)
    const [next, reply] = A.generateSyncMessage(doc, mine)
    mine = next
    if (reply !== null) await c.receiveSyncMessage(theirs, reply, 'probe')
    if (msg === null && reply === null) break
  }
  return A.getAllChanges(doc)
}

test('changes a replica already holds bring nothing: no events, no new changes, nothing written; new ones are returned as applied', async () => {
  const a = await node('ams-1')
  const b = await node('iad-1')
  const captured: Uint8Array[] = []
  a.onLocalChange((_docId, changes) => captured.push(...changes))
  await a.deployApp(webConfig('web'))
  // a local change is reported once durable, which may be just after the write resolved
  await waitFor(() => captured.length >= 1, { what: 'the deploy reported as a local change' })

  const first = await b.applyRemoteChanges('app:web', captured, 'ams-1')
  expect(first.changes.map((c) => A.decodeChange(c).hash)).toEqual(captured.map((c) => A.decodeChange(c).hash))
  expect(first.events.map((e) => e.type)).toContain('app.upserted')
  const seq = b.lastSeq
  const heads = b.digest().get('app:web')

  const again = await b.applyRemoteChanges('app:web', captured, 'ams-1')
  expect(again).toEqual({ events: [], missingDeps: false, changes: [] })
  expect(b.lastSeq).toBe(seq)
  expect(b.digest().get('app:web')).toEqual(heads)
})
