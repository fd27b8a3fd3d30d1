import { expect, test } from 'vitest'
import { openCatalog } from '../../catalog/index.js'
import { webConfig } from '../../catalog/test/fixtures.js'
import type { DocId } from '../../schemas/catalog-records.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { partition, startRelayedFleet, type TestNode, useTestFleet, waitForConvergence, waitForLog, waitForMesh } from './fleet-harness.js'

/**
 * What a fleet does to spare work: a message that reached everyone from its publisher is not forwarded, a
 * forward leaves out the peers the publisher reached, and an idle fleet runs no sync sessions — and what it
 * still does when that is not enough: forward around a cut link, sync with a peer that holds something others
 * lack, and replace a connection that stopped answering.
 */
const fleet = useTestFleet()

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const connected = (x: TestNode, y: TestNode): boolean => x.gossip.connectedPeers().includes(y.gossip.peerId)

test('a message that reached every node from its publisher is not forwarded; around a cut link the node between forwards it', async () => {
  // no periodic sync within the test: what arrives, arrives by broadcast
  const init = { syncIntervalMs: 60_000, heartbeatMs: 200, downAfterMs: 1_500 }
  const [a, b, c] = await startRelayedFleet(fleet, ['a', 'b', 'c'], init)
  await waitForConvergence([a, b, c])

  await a.catalog.deployApp(webConfig('everywhere'))
  await waitFor(() => b.catalog.getApp('everywhere') !== undefined && c.catalog.getApp('everywhere') !== undefined, { what: 'the app on b and c' })
  const before = { b: b.gossip.stats(), c: c.gossip.stats() }
  expect(before.b.changesNotForwarded).toBeGreaterThan(0)
  expect(before.c.changesNotForwarded).toBeGreaterThan(0)
  expect(before.b.heartbeatsNotForwarded).toBeGreaterThan(0)

  await partition([a], [c])
  await a.catalog.deployApp(webConfig('around'))
  // c hears of it only through b, which had c as a peer that a's publish did not reach
  await waitFor(() => c.catalog.getApp('around'), { timeoutMs: 3_000, what: 'the app on c through b' })
  expect(b.gossip.stats().changesNotForwarded).toBe(before.b.changesNotForwarded)
  // and a's heartbeats too: a stays up on c well past the down timeout, with no direct link
  await sleep(2 * init.downAfterMs)
  expect(connected(a, c)).toBe(false)
  expect(c.gossip.isNodeUp('a')).toBe(true)
  expect(a.gossip.isNodeUp('c')).toBe(true)
})

test('around a cut link, copies go only to the node the publisher could not reach: the others are spared', async () => {
  const init = { syncIntervalMs: 60_000, heartbeatMs: 200, downAfterMs: 1_500 }
  const [a, b, c, d] = await startRelayedFleet(fleet, ['a', 'b', 'c', 'd'], init)
  await waitForConvergence([a, b, c, d])
  await partition([a], [d])
  await sleep(3 * init.heartbeatMs) // every heartbeat since lists who its publisher reached after the cut
  const before = { b: b.gossip.stats(), c: c.gossip.stats(), d: d.gossip.stats() }
  await sleep(2 * init.downAfterMs)
  const after = { b: b.gossip.stats(), c: c.gossip.stats(), d: d.gossip.stats() }

  // d hears a only through b and c
  expect(connected(a, d)).toBe(false)
  expect(d.gossip.isNodeUp('a')).toBe(true)
  // b and c pass a's heartbeats on to d, leaving out each other (a had sent them the same heartbeat)
  expect(after.b.forwardsSpared - before.b.forwardsSpared).toBeGreaterThan(0)
  expect(after.c.forwardsSpared - before.c.forwardsSpared).toBeGreaterThan(0)
  // d's only peers, b and c, had every heartbeat d heard from its publisher, a's included: d forwards none
  const heard = after.d.heartbeatsReceived - before.d.heartbeatsReceived
  expect(heard).toBeGreaterThan(0)
  expect(after.d.heartbeatsNotForwarded - before.d.heartbeatsNotForwarded).toBe(heard)
})

test('an idle fleet runs no sync sessions; a node holding what the others lack is synced by them within seconds', async () => {
  const init = { syncIntervalMs: 300, heartbeatMs: 200 }
  const [a, b, c] = await startRelayedFleet(fleet, ['a', 'b', 'c'], init)
  await waitForConvergence([a, b, c])
  await sleep(1_000) // every heartbeat since carries the common digest hash
  const sessions = () => [a, b, c].reduce((n, x) => n + x.gossip.stats().syncInitiated, 0)
  const idleStart = sessions()
  await sleep(2_000) // six sync intervals
  expect(sessions()).toBe(idleStart)

  // c gets a document by a path broadcast does not cover (changes applied as if synced from elsewhere)
  const outsider = await openCatalog({ dataDir: `${fleet.dir}/outsider`, nodeName: 'outsider', sync: false })
  const changes: Array<{ docId: DocId; changes: Uint8Array[] }> = []
  const sub = outsider.onLocalChange((docId, ch) => changes.push({ docId, changes: ch }))
  await outsider.deployApp(webConfig('side'))
  await waitFor(() => changes.length > 0, { what: 'the outsider change' })
  sub.close()
  await outsider.close()
  for (const ch of changes) await c.catalog.applyRemoteChanges(ch.docId, ch.changes, 'outsider')

  // c's next heartbeat reports a digest a and b never held: their interval round syncs with c
  await waitFor(() => a.catalog.getApp('side') !== undefined && b.catalog.getApp('side') !== undefined, { timeoutMs: 5_000, what: 'the side app on a and b' })
  await waitForConvergence([a, b, c])
  expect(sessions()).toBeGreaterThan(idleStart)
})

test('a connection that stops answering pings is closed and redialled', async () => {
  const init = { pingIntervalMs: 150, tuning: { pingTimeoutMs: 200, deadConnectionMs: 1_000 } }
  const [a, b] = await startRelayedFleet(fleet, ['a', 'b'], init)
  // both directions go silent without closing: only the pings can tell
  a.relay!.set({ mode: 'blackhole' }, { from: [b.ip!] })
  b.relay!.set({ mode: 'blackhole' }, { from: [a.ip!] })
  const closed = await Promise.race([waitForLog(a, /no ping reply for too long/, 8_000), waitForLog(b, /no ping reply for too long/, 8_000)])
  expect(closed.failingMs).toBeGreaterThanOrEqual(1_000)
  await waitFor(() => !connected(a, b) || !connected(b, a), { what: 'the dead connection closed' })
  a.relay!.reset()
  b.relay!.reset()
  await waitFor(() => connected(a, b) && connected(b, a), { timeoutMs: 8_000, what: 'a and b connected again' })
  await a.catalog.deployApp(webConfig('after'))
  await waitFor(() => b.catalog.getApp('after'), { what: 'a change over the new connection' })
})
