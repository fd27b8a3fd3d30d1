import { expect, test } from 'vitest'
import { webConfig } from '../../catalog/test/fixtures.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { heal, headsOf, partition, startRelayedFleet, useTestFleet, waitForConvergence } from './fleet-harness.js'

const fleet = useTestFleet()

test('a partition with writes on both sides heals: identical heads within 2 s of the heal', async () => {
  const [l1, l2, r1, r2] = await startRelayedFleet(fleet, ['l1', 'l2', 'r1', 'r2'])
  const left = [l1, l2]
  const right = [r1, r2]
  await l1.catalog.deployApp(webConfig('shared'))
  await waitFor(() => [l2, r1, r2].every((n) => n.catalog.getApp('shared') !== undefined), { what: 'app shared everywhere' })
  await waitForConvergence([l1, l2, r1, r2]) // the node records too: the partition starts from one state

  await partition(left, right)
  await l1.catalog.deployApp(webConfig('left-app'))
  await l2.catalog.createMachine({ app: 'shared', region: 'ams', node: 'l2', spec: { cmd: ['l'] } })
  await r2.catalog.deployApp(webConfig('right-app'))
  await r1.catalog.createMachine({ app: 'shared', region: 'ams', node: 'r1', spec: { cmd: ['r'] } })
  // each side converges on its own, and nothing crosses
  await waitFor(() => l2.catalog.getApp('left-app') !== undefined && r1.catalog.getApp('right-app') !== undefined, { what: 'writes within each side' })
  await waitForConvergence(left)
  await waitForConvergence(right)
  expect(headsOf(l1)).not.toBe(headsOf(r1))
  expect(l1.catalog.getApp('right-app')).toBeUndefined()
  expect(r1.catalog.getApp('left-app')).toBeUndefined()

  heal([l1, l2, r1, r2])
  await waitForConvergence([l1, l2, r1, r2], 2_000)

  await waitFor(() => [l1, l2, r1, r2].every((n) => n.catalog.getApp('left-app') && n.catalog.getApp('right-app') && n.catalog.listMachines({ app: 'shared' }).length === 2), { what: 'both sides\' writes everywhere' })
})

test('with 10% of connections lost and links cut every 300 ms, writes from every node still converge', async () => {
  const nodes = await startRelayedFleet(fleet, ['p1', 'p2', 'p3', 'p4'])
  for (const n of nodes) n.relay!.set({ connectionLoss: 0.1 })
  let cuts = 0
  const churn = setInterval(() => { nodes[cuts++ % nodes.length].relay!.cut() }, 300)
  let written = 0
  const lost = (): number => nodes.reduce((sum, n) => sum + n.relay!.stats().connectionsLost, 0)
  try {
    // every node keeps writing until eight cuts have happened and the loss has bitten a few times
    await Promise.all(nodes.map(async (n, i) => {
      for (let k = 0; cuts < 8 || lost() < 3; k++) {
        await n.catalog.deployApp(webConfig(`app-${i}-${k}`))
        written++
        await new Promise((resolve) => setTimeout(resolve, 150))
      }
    }))
  } finally {
    clearInterval(churn)
  }
  await waitForConvergence(nodes, 20_000)
  await waitFor(() => nodes.every((n) => n.catalog.listApps().length === written), { timeoutMs: 5_000, what: `${written} apps on every node` })
  expect(lost()).toBeGreaterThanOrEqual(3)
})

test('after a heal, what the sessions across bring is broadcast on to the rest of each side; sessions that would bring the same are put off', async () => {
  const nodes = await startRelayedFleet(fleet, ['a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'b3', 'b4'])
  const [left, right] = [nodes.slice(0, 4), nodes.slice(4)]
  await waitForConvergence(nodes)
  await partition(left, right)
  for (let k = 0; k < 4; k++) {
    await left[k].catalog.deployApp(webConfig(`left-${k}`))
    await right[k].catalog.deployApp(webConfig(`right-${k}`))
  }
  await waitForConvergence(left)
  await waitForConvergence(right)
  const before = nodes.map((n) => n.gossip.stats())

  heal(nodes)
  await waitForConvergence(nodes, 2_000)
  const after = nodes.map((n) => n.gossip.stats())
  const delta = (k: 'syncDocsRelayed' | 'changesRelayed' | 'changesReceived' | 'changesAlreadyHeld' | 'syncDocsPushed') =>
    after.reduce((t, s, i) => t + s[k] - before[i][k], 0)
  expect(nodes.every((n) => [0, 1, 2, 3].every((k) => n.catalog.getApp(`left-${k}`) && n.catalog.getApp(`right-${k}`)))).toBe(true)
  // sessions across passed on what they brought, and other nodes took it from those broadcasts as news
  expect(delta('syncDocsRelayed')).toBeGreaterThan(0)
  expect(delta('changesRelayed')).toBeGreaterThan(0)
  expect(delta('changesReceived') - delta('changesAlreadyHeld')).toBeGreaterThan(0)
  // the new apps crossed by push, not by Automerge rounds
  expect(delta('syncDocsPushed')).toBeGreaterThanOrEqual(8)
})

test('after a heal, a session with a second node of the other side in the same state waits for the first to end', async () => {
  // quick heartbeats, so every node last heard the others report the converged state; quick redials, so the
  // cut links come back together and the sessions across would all run at once
  const nodes = await startRelayedFleet(fleet, ['d1', 'd2', 'e1', 'e2', 'e3'], { heartbeatMs: 200, redialMaxMs: 100 })
  const [left, right] = [nodes.slice(0, 2), nodes.slice(2)]
  await waitForConvergence(nodes)
  await new Promise((resolve) => setTimeout(resolve, 800))
  await partition(left, right)
  for (let k = 0; k < 8; k++) {
    await left[k % 2].catalog.deployApp(webConfig(`d-${k}`))
    await right[k % 3].catalog.deployApp(webConfig(`e-${k}`))
  }
  await waitForConvergence(left)
  await waitForConvergence(right)
  const before = nodes.map((n) => n.gossip.stats())

  heal(nodes)
  // 30 ms each way at every relay: a session across takes several round trips, so they would overlap
  for (const n of nodes) n.relay!.set({ delayMs: { up: 30, down: 30 } })
  await waitForConvergence(nodes, 5_000)
  const after = nodes.map((n) => n.gossip.stats())
  const delta = (k: 'syncDeferred' | 'syncInitiated') => after.reduce((t, s, i) => t + s[k] - before[i][k], 0)
  expect(nodes.every((n) => n.catalog.listApps().length === 16)).toBe(true)
  expect(delta('syncDeferred')).toBeGreaterThan(0)
})
