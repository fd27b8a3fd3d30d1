import { expect, test } from 'vitest'
import { waitFor } from '../../test/helpers/wait-for.js'
import { useTestFleet, waitForEvent, waitForMesh } from './fleet-harness.js'

const fleet = useTestFleet()

const FAST = { heartbeatMs: 100, downAfterMs: 700 }

test('a node silent past the timeout is down for routing, and up again when heard; nothing is deleted', async () => {
  const a = await fleet.start({ name: 'a', relayed: true, init: FAST })
  const b = await fleet.start({ name: 'b', relayed: true, bootstrap: [a], region: 'fra', init: FAST })
  await waitForMesh([a, b], 1)
  await waitFor(() => a.gossip.nodes().find((n) => n.name === 'b')?.lastHeartbeatAt !== undefined && a.catalog.getNode('b') !== undefined, { what: 'a heard b and has its record' })
  expect(a.gossip.isNodeUp('b')).toBe(true)
  expect(a.gossip.nodes().find((n) => n.name === 'b')).toMatchObject({ state: 'up', region: 'fra', peerId: b.gossip.peerId, load: { machines: 0, connections: 0 } })

  // black-hole both relays: connections stay open but nothing gets through, as in a silent network failure
  a.relay!.set({ mode: 'blackhole' }, { from: b.ip })
  b.relay!.set({ mode: 'blackhole' }, { from: a.ip })
  const down = await waitForEvent(a, (e) => e.type === 'node.down' && e.node === 'b')
  expect(down).toMatchObject({ origin: 'a', lastSeen: expect.any(Number) })
  expect(a.gossip.isNodeUp('b')).toBe(false)
  expect(a.catalog.snapshot().downNodes).toEqual(['b'])
  expect(a.catalog.getNode('b')).toMatchObject({ status: 'active', region: 'fra' })
  expect(a.gossip.isNodeUp('a')).toBe(true) // self is always up
  await waitForEvent(b, (e) => e.type === 'node.down' && e.node === 'a')

  a.relay!.reset()
  b.relay!.reset()
  await waitForEvent(a, (e) => e.type === 'node.up' && e.node === 'b', 10_000)
  expect(a.gossip.isNodeUp('b')).toBe(true)
  expect(a.catalog.snapshot().downNodes).toEqual([])
  const kinds = a.events.filter((e) => e.type === 'node.down' || e.type === 'node.up').map((e) => e.type)
  expect(kinds).toEqual(['node.down', 'node.up'])
})

test('a graceful stop marks the node left on its peers, and it is not reported down afterwards', async () => {
  const a = await fleet.start({ name: 'a', init: FAST })
  const b = await fleet.start({ name: 'b', bootstrap: [a], init: FAST })
  await waitForMesh([a, b], 1)
  await waitFor(() => a.gossip.isNodeUp('b') && a.catalog.getNode('b') !== undefined, { what: 'a knows b' })

  await fleet.stop('b')

  await waitForEvent(a, (e) => e.type === 'node.left' && e.node === 'b')
  expect(a.catalog.getNode('b')?.status).toBe('left')
  expect(a.gossip.isNodeUp('b')).toBe(false)
  expect(a.gossip.nodes().find((n) => n.name === 'b')?.state).toBe('left')
  // well past the timeout: a left node is gone, not down
  await waitFor(() => a.gossip.stats().heartbeatsSent >= 15, { what: 'a few heartbeat periods' })
  expect(a.events.some((e) => e.type === 'node.down')).toBe(false)
})

test('closeness: smoothed RTT per node from pings, regions ordered by it', async () => {
  const init = { pingIntervalMs: 100 }
  const a = await fleet.start({ name: 'a', relayed: true, region: 'ams', init })
  const b = await fleet.start({ name: 'b', relayed: true, region: 'fra', bootstrap: [a], init })
  const c = await fleet.start({ name: 'c', relayed: true, region: 'syd', bootstrap: [a], init })
  await waitForMesh([a, b, c], 2)
  // every link between a and c crosses one of these relays, whichever side dialled: +80 ms RTT
  c.relay!.set({ delayMs: { up: 40, down: 40 } }, { from: a.ip })
  a.relay!.set({ delayMs: { up: 40, down: 40 } }, { from: c.ip })

  await waitFor(() => (a.gossip.closeness.rttToNode('c') ?? 0) >= 60, { timeoutMs: 10_000, what: 'a sees c far away' })
  await waitFor(() => a.gossip.closeness.rttToNode('b') !== undefined, { what: 'a measured b' })
  expect(a.gossip.closeness.rttToNode('b')).toBeLessThan(a.gossip.closeness.rttToNode('c')!)
  expect(a.gossip.closeness.rttToNode('a')).toBe(0)
  expect(a.gossip.closeness.rttToNode('nowhere')).toBeUndefined()
  expect(a.gossip.closeness.regionsByRtt()).toEqual(['ams', 'fra', 'syd'])
  expect(a.gossip.nodes().find((n) => n.name === 'c')?.rttMs).toBeGreaterThanOrEqual(60)
})

/** Node a in ams and b in fra, every ping from b to a slowed by 200 ms from b's very first connection on. */
async function startWithSlowFirstConnection() {
  const init = { ...FAST, pingIntervalMs: 60_000 }
  const a = await fleet.start({ name: 'a', relayed: true, region: 'ams', init })
  // b's first start only gives it its address, so that the relay can slow the very first connection from it
  const first = await fleet.start({ name: 'b', relayed: true, region: 'fra', init })
  await fleet.stop('b')
  a.relay!.set({ delayMs: { up: 100, down: 100 } }, { from: first.ip })
  const b = await fleet.start({ name: 'b', relayed: true, region: 'fra', bootstrap: [a], init })
  await waitFor(() => (b.gossip.closeness.rttToNode('a') ?? 0) >= 150, { timeoutMs: 10_000, what: 'b measuring a through the slow relay' })
  return { a, b }
}

test('a ping slowed while the connection was being set up stops counting within seconds, not after a ping interval', async () => {
  const { a, b } = await startWithSlowFirstConnection()

  // the slow moment is over: a new peer is pinged every second until it has a window of pings, and its RTT is
  // the least of them, so routing does not lean on the first one for the next minute
  a.relay!.reset()
  await waitFor(() => (b.gossip.closeness.rttToNode('a') ?? Infinity) < 50, { timeoutMs: 5_000, what: 'b seeing a close again' })
  expect(b.gossip.closeness.regionsByRtt()).toEqual(['fra', 'ams'])
})

test('pings slowed through a busy start stop counting within seconds of it, even after they filled the RTT window', async () => {
  const { a, b } = await startWithSlowFirstConnection()
  // slow for longer than a window of warm-up pings (six, a second apart): every sample b holds is a slow one
  await new Promise((resolve) => setTimeout(resolve, 7_500))
  expect(b.gossip.closeness.rttToNode('a')).toBeGreaterThanOrEqual(150)

  // a connection's first 30 s are pinged every second, not once a minute, so the slow time leaves the window
  a.relay!.reset()
  await waitFor(() => (b.gossip.closeness.rttToNode('a') ?? Infinity) < 50, { timeoutMs: 8_000, what: 'b seeing a close again' })
  expect(b.gossip.closeness.regionsByRtt()).toEqual(['fra', 'ams'])
})
