import { expect, test } from 'vitest'
import { ChangesMessageSchema, GOSSIP_LIMITS, HeartbeatSchema, SyncFrameSchema } from '../../schemas/gossip-messages.js'
import { digestHashOf } from '../../catalog/digest-hash.js'
import { differingDocs } from '../digest.js'
import { Throttle } from '../throttle.js'
import { decodeWire, encodeWire } from '../wire-codec.js'

const change = new Uint8Array([0x85, 0x6f, 0x4a, 0x83, 1, 2, 3])

test('a changes message round-trips with its bytes intact', () => {
  const bytes = encodeWire({ v: 1, docId: 'app:web', changes: [change] })
  const r = decodeWire(ChangesMessageSchema, bytes, GOSSIP_LIMITS.changesMessageBytes)
  expect(r).toEqual({ ok: true, value: { v: 1, docId: 'app:web', changes: [change] } })
})

test('a peer message is dropped for size before it is parsed, then for CBOR, then for its schema, naming the field', () => {
  const big = encodeWire({ v: 1, docId: 'app:web', changes: [new Uint8Array(2000)] })
  expect(decodeWire(ChangesMessageSchema, big, 1000)).toMatchObject({ ok: false, reason: 'oversize' })
  expect(decodeWire(ChangesMessageSchema, new Uint8Array([0xff, 0x00, 0x13]), 1000)).toMatchObject({ ok: false, reason: 'malformed' })
  expect(decodeWire(ChangesMessageSchema, encodeWire({ v: 1, docId: 'app:web', changes: 'nope' }), 1000))
    .toMatchObject({ ok: false, reason: 'wrong-type', detail: expect.stringMatching(/^changes: /) })
  expect(decodeWire(ChangesMessageSchema, encodeWire({ v: 1, docId: '../etc', changes: [change] }), 1000))
    .toMatchObject({ ok: false, reason: 'wrong-type', detail: expect.stringMatching(/^docId: /) })
  expect(decodeWire(ChangesMessageSchema, encodeWire({ v: 1, docId: 'app:web', changes: [change], extra: 1 }), 1000))
    .toMatchObject({ ok: false, reason: 'wrong-type' })
})

test('a heartbeat with a bad node name is refused', () => {
  const hb = { v: 1, node: 'Bad Name', region: 'ams', peerId: '12D3KooW', addrs: [], load: { machines: 0, connections: 0 }, status: 'active', startedAt: 1, sentAt: 2 }
  expect(decodeWire(HeartbeatSchema, encodeWire(hb), 4096)).toMatchObject({ ok: false, reason: 'wrong-type', detail: expect.stringMatching(/^node: /) })
  expect(decodeWire(HeartbeatSchema, encodeWire({ ...hb, node: 'ams-1' }), 4096)).toMatchObject({ ok: true })
})

test('sync frames are a closed set', () => {
  expect(SyncFrameSchema.safeParse({ t: 'bye' }).success).toBe(true)
  expect(SyncFrameSchema.safeParse({ t: 'shutdown' }).success).toBe(false)
  expect(SyncFrameSchema.safeParse({ t: 'sync', msgs: [{ docId: 'nodes', msg: null }] }).success).toBe(true)
  expect(SyncFrameSchema.safeParse({ t: 'hello', v: 1, node: 'a', digestHash: new Uint8Array(31) }).success).toBe(false)
})

test('digests: equal content hashes equal whatever the order; differing documents are found both ways', () => {
  const h1 = 'a'.repeat(64)
  const h2 = 'b'.repeat(64)
  const mine = new Map([['app:web', [h1, h2]], ['nodes', [h1]]] as const)
  const same = new Map([['nodes', [h1]], ['app:web', [h2, h1]]] as const)
  expect(digestHashOf(mine)).toEqual(digestHashOf(same))
  const theirs = new Map([['app:web', [h1]], ['app:api', [h2]]] as const)
  expect(differingDocs(mine, theirs).sort()).toEqual(['app:api', 'app:web', 'nodes'])
  expect(differingDocs(mine, same)).toEqual([])
})

test('the throttle allows a burst, then the sustained rate, per key', () => {
  let now = 0
  const t = new Throttle({ perSecond: 10, burst: 3, now: () => now })
  expect([t.take('p'), t.take('p'), t.take('p'), t.take('p')]).toEqual([true, true, true, false])
  expect(t.take('q')).toBe(true)
  now += 100 // one token back at 10/s
  expect([t.take('p'), t.take('p')]).toEqual([true, false])
  now += 120_000
  t.take('q')
  expect(t.size).toBe(1) // p's idle bucket was forgotten
})
