import type { Stream } from '@libp2p/interface'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, beforeEach, expect, test } from 'vitest'
import type { Catalog } from '../../catalog/catalog-api.js'
import { openCatalog } from '../../catalog/index.js'
import { webConfig } from '../../catalog/test/fixtures.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { generateFleetKey } from '../fleet-key.js'
import type { GossipLibp2p } from '../libp2p-node.js'
import { SyncChannel } from '../sync-channel.js'
import { type SyncSessionContext, type SyncSessionResult, syncAsInitiator, syncAsResponder } from '../sync-protocol.js'
import { startBareLibp2p } from './fleet-harness.js'

/**
 * One `/edgeproxy/sync/2` session between two real catalogs over a real libp2p stream (TCP, Noise, Yamux),
 * without the rest of gossip, so that what a session does is all that happens.
 */
const PROTOCOL = '/edgeproxy/test-sync/1'
const fleetKey = generateFleetKey()
let dir: Awaited<ReturnType<typeof tempDir>>
const closers: Array<() => Promise<void>> = []

beforeEach(async () => { dir = await tempDir() })
afterEach(async () => {
  while (closers.length > 0) await closers.pop()!()
  await dir.remove()
})

async function catalog(name: string): Promise<Catalog> {
  const c = await openCatalog({ dataDir: join(dir.path, name), nodeName: name })
  closers.push(() => c.close())
  return c
}

async function peer(): Promise<GossipLibp2p> {
  const p = await startBareLibp2p(fleetKey, 'test')
  closers.push(async () => { await p.stop() })
  return p
}

function context(replica: Catalog, peerName: string): SyncSessionContext {
  return { replica, peer: peerName, log: pino({ level: 'silent' }), docsPerRound: 64, maxRoundsPerDoc: 16, frameBudgetBytes: 1024 * 1024 }
}

function channel(stream: Stream): SyncChannel {
  return new SyncChannel(stream, { maxFrameBytes: 4 * 1024 * 1024, frameTimeoutMs: 5000, signal: AbortSignal.timeout(20_000) })
}

/** Runs one session, `a` initiating; resolves with both sides' results once the stream is closed. */
async function session(a: Catalog, b: Catalog): Promise<{ initiator: SyncSessionResult; responder: SyncSessionResult }> {
  const [pa, pb] = [await peer(), await peer()]
  let responder: Promise<SyncSessionResult> | undefined
  await pb.handle(PROTOCOL, (stream) => {
    responder = syncAsResponder(channel(stream), { ...context(b, 'a'), maxDocs: 1000 })
    void responder.then(() => stream.close(), () => stream.abort(new Error('session failed')))
  })
  const stream = await pa.dialProtocol(pb.getMultiaddrs()[0], PROTOCOL, { signal: AbortSignal.timeout(5000) })
  const initiator = await syncAsInitiator(channel(stream), context(a, 'b'))
  await stream.close()
  return { initiator, responder: await responder! }
}

test('documents the other side lacks or is behind on are pushed in one exchange; only a document written on both sides runs Automerge rounds', async () => {
  const a = await catalog('ams-1')
  const b = await catalog('iad-1')
  await a.deployApp(webConfig('shared'))
  await a.deployApp(webConfig('behind'))
  // a node that holds nothing gets everything by push: no rounds at all
  const first = await session(a, b)
  expect(first.initiator).toMatchObject({ inSync: false, docs: 2, pushed: 2, converged: 2, failed: 0, rounds: 0 })
  expect(b.digest()).toEqual(a.digest())

  await a.deployApp(webConfig('only-a'))
  await b.deployApp(webConfig('only-b'))
  const ahead = await a.createMachine({ app: 'behind', region: 'ams', node: 'ams-1', spec: { cmd: ['a'] } })
  const ma = await a.createMachine({ app: 'shared', region: 'ams', node: 'ams-1', spec: { cmd: ['a'] } })
  const mb = await b.createMachine({ app: 'shared', region: 'iad', node: 'iad-1', spec: { cmd: ['b'] } })

  const { initiator, responder } = await session(b, a)
  // only-a and behind pushed by a (the responder), only-b by b; shared took Automerge's rounds
  expect(initiator).toMatchObject({ inSync: false, docs: 4, pushed: 3, converged: 4, failed: 0 })
  // the responder opened shared's sync in its pushes (heads and bloom filter): the one round trades what each
  // side lacks, and its answer shows both at the same heads
  expect(initiator.rounds).toBe(1)
  expect(responder).toMatchObject({ docs: 4, pushed: 3, failed: 0 })
  expect(b.digest()).toEqual(a.digest())
  for (const c of [a, b]) {
    expect(c.getApp('only-a')).toBeDefined()
    expect(c.getApp('only-b')).toBeDefined()
    expect(c.getMachine(ahead.id)).toBeDefined()
    expect(c.listMachines({ app: 'shared' }).map((m) => m.id).sort()).toEqual([ma.id, mb.id].sort())
  }
})

test('a pushed document the receiver has written to since its digest was taken is reported, and the next session gives the change back', async () => {
  const a = await catalog('ams-1')
  const b = await catalog('iad-1')
  await a.deployApp(webConfig('web'))
  await session(a, b)
  // b's digest is taken, then a and b both write to the document before the session runs
  const staleDigest = b.digest()
  const staleHash = b.digestHash()
  const fromA = await a.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['a'] } })
  const fromB = await b.createMachine({ app: 'web', region: 'iad', node: 'iad-1', spec: { cmd: ['b'] } })
  const bAsOfDigest: Catalog = Object.assign(Object.create(b) as Catalog, { digest: () => staleDigest, digestHash: () => staleHash })

  const first = await session(bAsOfDigest, a)
  // a was ahead of what b reported and pushed; b then held a change a lacks
  expect(first.initiator).toMatchObject({ pushed: 1, peerLacks: true, failed: 0 })
  expect(a.getMachine(fromB.id)).toBeUndefined()
  const second = await session(b, a)
  expect(second.initiator).toMatchObject({ peerLacks: false, failed: 0 })
  expect(a.digest()).toEqual(b.digest())
  for (const c of [a, b]) expect(c.listMachines({ app: 'web' }).map((m) => m.id).sort()).toEqual([fromA.id, fromB.id].sort())
})
