import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { expect, test } from 'vitest'
import { Reach, type ReachPubSub } from '../reach.js'

/**
 * Who a receiver forwards to, given the publisher's reach list: its subscribed peers and its mesh are set per
 * case, as gossipsub would report them.
 */
const TOPIC = 'edgeproxy/heartbeat/1'

async function peerIds(n: number): Promise<string[]> {
  return await Promise.all(Array.from({ length: n }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
}

/** A node's view of the topic: who is subscribed and who is in its mesh. */
function view(subscribers: string[], mesh: string[]): ReachPubSub {
  return { getSubscribers: () => subscribers, getMeshPeers: () => mesh }
}

/** The reach list `publisher` puts in a message sent to `sentTo`. */
function reachOf(publisher: string, sentTo: string[]): Uint8Array {
  return new Reach(view(sentTo, []), publisher).encode(TOPIC)!
}

function receiver(self: string, subscribers: string[], mesh: string[]): { reach: Reach; spared: string[] } {
  const spared: string[] = []
  return { reach: new Reach(view(subscribers, mesh), self, (msgId, peer) => spared.push(`${msgId} ${peer}`)), spared }
}

test('first-hand, every subscribed peer already reached: not forwarded', async () => {
  const [a, b, c, d] = await peerIds(4)
  const { reach, spared } = receiver(b, [a, c, d], [a, c, d])
  expect(reach.forward(TOPIC, 'm1', a, reachOf(a, [b, c, d]))).toBe(false)
  expect(spared).toEqual([])
})

test('first-hand, one subscribed peer not reached: forwarded, and the mesh peers the publisher reached are left out', async () => {
  const [a, b, c, d, e] = await peerIds(5)
  // a cannot reach d: b forwards to d only, not to c and e, which a sent it to
  const { reach, spared } = receiver(b, [a, c, d, e], [a, c, d, e])
  expect(reach.forward(TOPIC, 'm1', a, reachOf(a, [b, c, e]))).toBe(true)
  expect(spared.sort()).toEqual([`m1 ${c}`, `m1 ${e}`].sort())
})

test('second-hand: the publisher and the peers it reached are left out; nothing left, nothing forwarded', async () => {
  const [a, b, c, d, e] = await peerIds(5)
  // d got a's message from b; a sent it to b and c, not to d or e
  const withE = receiver(d, [a, b, c, e], [a, b, c, e])
  expect(withE.reach.forward(TOPIC, 'm2', b, reachOf(a, [b, c]))).toBe(true)
  expect(withE.spared.sort()).toEqual([`m2 ${a}`, `m2 ${c}`].sort())

  // without e, every peer d would tell already has it: a plain gossipsub node would still forward to its mesh
  const withoutE = receiver(d, [b, c], [b, c])
  expect(withoutE.reach.forward(TOPIC, 'm3', b, reachOf(a, [b, c]))).toBe(false)
})

test('a peer not in the mesh still counts as lacking the message, so it stays available for gossip', async () => {
  const [a, b, c, d] = await peerIds(4)
  // d is subscribed but not in b's mesh: accepted (kept for IHAVE gossip), and every mesh peer is spared
  const { reach, spared } = receiver(b, [a, c, d], [a, c])
  expect(reach.forward(TOPIC, 'm4', a, reachOf(a, [b, c]))).toBe(true)
  expect(spared).toEqual([`m4 ${c}`])
})

test('no usable reach list: forwarded as gossipsub does, nobody spared', async () => {
  const [a, b, c] = await peerIds(3)
  const { reach, spared } = receiver(b, [a, c], [a, c])
  expect(reach.forward(TOPIC, 'm5', a, undefined)).toBe(true)
  expect(reach.forward(TOPIC, 'm6', a, new Uint8Array(12))).toBe(true)
  expect(spared).toEqual([])
})
