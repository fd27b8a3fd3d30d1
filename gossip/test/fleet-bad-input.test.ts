import * as A from '@automerge/automerge'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, expect, test } from 'vitest'
import type { Catalog } from '../../catalog/catalog-api.js'
import { webConfig } from '../../catalog/test/fixtures.js'
import type { DocId } from '../../schemas/catalog-records.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { SYNC_PROTOCOL } from '../anti-entropy.js'
import { CHANGES_TOPIC } from '../broadcast.js'
import type { GossipLibp2p } from '../libp2p-node.js'
import { HEARTBEAT_TOPIC } from '../membership.js'
import { encodeWire } from '../wire-codec.js'
import { startBareLibp2p, type TestNode, useTestFleet, waitForMesh } from './fleet-harness.js'

const fleet = useTestFleet()
let mallory: GossipLibp2p | undefined

afterEach(async () => {
  await mallory?.stop()
  mallory = undefined
})

/** A fleet member gone bad: a bare libp2p node with the fleet key, connected to `victim`, sending what it likes. */
async function startMallory(victim: TestNode): Promise<GossipLibp2p> {
  mallory = await startBareLibp2p(fleet.fleetKey, 'evil', [CHANGES_TOPIC, HEARTBEAT_TOPIC])
  await mallory.dial(multiaddr(victim.address))
  const m = mallory
  await waitFor(() => m.services.pubsub.getSubscribers(CHANGES_TOPIC).some((p) => p.toString() === victim.gossip.peerId), { what: 'the victim subscribed, as mallory sees it' })
  return m
}

/** The full history of a document as Automerge changes, fetched the way any peer could: by syncing. */
async function historyOf(c: Catalog, docId: DocId): Promise<Uint8Array[]> {
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

test('malformed, oversize, wrongly typed, invalid and poison messages are dropped by reason; the node keeps serving', async () => {
  const a = await fleet.start({ name: 'a' })
  const b = await fleet.start({ name: 'b', bootstrap: [a] })
  await waitForMesh([a, b], 1)
  await a.catalog.deployApp(webConfig('web'))
  await a.catalog.deployApp(webConfig('api'))
  await waitFor(() => b.catalog.getApp('web') && b.catalog.getApp('api'), { what: 'both apps on b' })
  const m = await startMallory(b)
  const publish = (data: Uint8Array) => m.services.pubsub.publish(CHANGES_TOPIC, data)

  await publish(new Uint8Array([0xff, 0xfe, 0x00, 0x01]))
  await publish(encodeWire({ v: 1, docId: 'app:web', changes: [new Uint8Array(300 * 1024).fill(7)] }))
  await publish(encodeWire({ v: 1, docId: 'app:web', changes: 'not a list' }))
  await publish(encodeWire({ v: 1, docId: 'app:web', changes: [new Uint8Array([1, 2, 3, 4])] }))
  // valid Automerge bytes whose record breaks the schema: the catalog refuses the change, keeps the document
  const [evil] = A.applyChanges(A.init<Record<string, any>>({ actor: 'ee' }), await historyOf(a.catalog, 'app:web')) // eslint-disable-line @typescript-eslint/no-explicit-any
  const poisoned = A.change(evil, (d) => { d.machines['zzzzzzzzzzzzzz'] = { meta: { id: 'not-an-id' } } })
  await publish(encodeWire({ v: 1, docId: 'app:web', changes: [A.getLastLocalChange(poisoned)!] }))

  await waitFor(() => {
    const d = b.gossip.stats().droppedChanges
    return d.malformed === 1 && d.oversize === 1 && d['wrong-type'] === 1 && d['invalid-changes'] === 1 && d.poison === 1
  }, { what: 'every bad message counted under its reason' })
  await waitFor(() => (b.gossip.peerScore(m.peerId.toString()) ?? 0) < 0, { what: 'mallory\'s score below zero on b' })

  // the poisoned document stays as it was and keeps being served; b did not forward the poison
  expect(b.catalog.isQuarantined('app:web')).toBe(false)
  expect(b.catalog.getApp('web')?.name).toBe('web')
  expect(b.events.some((e) => e.type === 'catalog.quarantined')).toBe(false)
  expect(a.catalog.getApp('web')?.name).toBe('web')
  expect(b.catalog.getApp('api')?.name).toBe('api')
  await a.catalog.createMachine({ app: 'api', region: 'ams', node: 'a', spec: { cmd: ['x'] } })
  await waitFor(() => b.catalog.listMachines({ app: 'api' }).length === 1, { what: 'b still takes changes to other documents' })
  expect(b.gossip.stats().droppedChanges.throttled).toBe(0)
})

test('a peer flooding messages is throttled, not obeyed, and the fleet keeps working', async () => {
  const a = await fleet.start({ name: 'a' })
  const b = await fleet.start({ name: 'b', bootstrap: [a], init: { tuning: { heartbeatsPerPeerPerSecond: 20, heartbeatsPerPeerBurst: 40 } } })
  await waitForMesh([a, b], 1)
  const m = await startMallory(b)

  const flood = Array.from({ length: 400 }, (_, i) => encodeWire({
    v: 1, node: `ghost-${i}`, region: 'ams', peerId: m.peerId.toString(), addrs: [], load: { machines: 0, connections: 0 },
    status: 'active', startedAt: 1, sentAt: i,
  }))
  await Promise.all(flood.map((data) => m.services.pubsub.publish(HEARTBEAT_TOPIC, data)))

  await waitFor(() => b.gossip.stats().droppedHeartbeats.throttled >= 300, { what: 'most of the flood throttled' })
  // a burst's worth got through and was forwarded like any heartbeat; the rest never reached membership
  expect(b.gossip.nodes().filter((n) => n.name.startsWith('ghost-')).length).toBeLessThanOrEqual(60)
  await a.catalog.deployApp(webConfig('web'))
  await waitFor(() => b.catalog.getApp('web'), { what: 'b still takes a\'s changes' })
})

test('sync requests that break the protocol or come too fast are refused without harm', async () => {
  const a = await fleet.start({ name: 'a' })
  const b = await fleet.start({ name: 'b', bootstrap: [a] })
  await waitForMesh([a, b], 1)
  const m = await startMallory(b)
  const victim = b.gossip.peerId

  const stream = await m.dialProtocol(m.getPeers().find((p) => p.toString() === victim)!, SYNC_PROTOCOL)
  const lp = lpStream(stream)
  await lp.write(encodeWire({ t: 'hello', v: 2, node: 'mallory', digestHash: 'not bytes' }))
  await waitFor(() => b.gossip.stats().syncProtocolErrors >= 1, { what: 'a protocol error counted' })

  // sessions that say hello and then stall: a peer may hold two at a time, the rest are refused at once
  const held = []
  for (let i = 0; i < 30; i++) {
    const s = await m.dialProtocol(m.getPeers().find((p) => p.toString() === victim)!, SYNC_PROTOCOL)
    held.push(s)
    // a refused stream may already be reset by b when mallory writes: that is the refusal under test
    await lpStream(s).write(encodeWire({ t: 'hello', v: 2, node: 'mallory', digestHash: new Uint8Array(32) })).catch(() => undefined)
  }
  await waitFor(() => b.gossip.stats().syncThrottled >= 28, { what: 'sync sessions beyond two refused' })
  for (const s of held) s.abort(new Error('done'))

  await a.catalog.deployApp(webConfig('web'))
  await waitFor(() => b.catalog.getApp('web'), { what: 'b still takes a\'s changes' })
  const results = await b.gossip.syncNow()
  expect(results.some((r) => r.inSync)).toBe(true)
})
