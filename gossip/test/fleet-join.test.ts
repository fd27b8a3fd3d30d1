import { expect, test } from 'vitest'
import { webConfig } from '../../catalog/test/fixtures.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { fleetKeyFingerprint, generateFleetKey } from '../fleet-key.js'
import { useTestFleet, waitForConvergence, waitForLog, waitForMesh } from './fleet-harness.js'

const fleet = useTestFleet()

test('a node stopped for a while restarts from its data dir with the same peer id and catches up', async () => {
  const a = await fleet.start({ name: 'a' })
  const b = await fleet.start({ name: 'b', bootstrap: [a] })
  const c = await fleet.start({ name: 'c', bootstrap: [a] })
  await waitForMesh([a, b, c], 2)
  await a.catalog.deployApp(webConfig('web'))
  await waitFor(() => c.catalog.getApp('web'), { what: 'web on c' })
  const peerId = c.gossip.peerId

  await fleet.stop('c')
  await a.catalog.deployApp(webConfig('api'))
  for (let i = 0; i < 3; i++) await b.catalog.createMachine({ app: 'web', region: 'ams', node: 'b', spec: { cmd: ['x'] } })

  const back = await fleet.restart('c')
  expect(back.gossip.peerId).toBe(peerId)
  // it served what it knew from its own disk before any peer answered
  expect(back.catalog.getApp('web')?.name).toBe('web')
  await waitFor(() => back.catalog.getApp('api') !== undefined && back.catalog.listMachines({ app: 'web' }).length === 3, { what: 'c caught up' })
  await waitForConvergence([a, b, back])
  expect(back.catalog.getNode('c')).toMatchObject({ status: 'active', peerId })
  // its peers held what it caught up on: it passed none of it on (gossip/sync-relay.ts)
  expect(back.gossip.stats().syncDocsRelayed).toBe(0)
})

test('a node without the fleet key runs alone and says so; it has no listener and nobody reaches it', async () => {
  const a = await fleet.start({ name: 'a' })
  const lone = await fleet.start({ name: 'lone', fleetKey: null, bootstrap: [a] })

  expect(lone.gossip.alone).toBe(true)
  expect(lone.gossip.multiaddrs()).toEqual([])
  expect(lone.gossip.listenAddrs()).toEqual([])
  const warning = await waitForLog(lone, /no fleet key/)
  expect(warning.level).toBe(40)
  expect(warning.msg).toContain('edgeproxy fleet init')
  // it still keeps its own record, so `catalog nodes` shows it
  expect(lone.catalog.getNode('lone')).toMatchObject({ status: 'active', gossip: [] })
  expect(lone.gossip.isNodeUp('lone')).toBe(true)
  expect(lone.gossip.closeness.rttToNode('lone')).toBe(0)
  await a.catalog.deployApp(webConfig('web'))
  expect(a.gossip.connectedPeers()).toEqual([])
})

test('a node with a different fleet key cannot join, and both sides log the likely cause', async () => {
  const a = await fleet.start({ name: 'a' })
  await a.catalog.deployApp(webConfig('web'))
  const otherKey = generateFleetKey()
  const mallory = await fleet.start({ name: 'mallory', fleetKey: otherKey, bootstrap: [a] })
  // a control node with the right key, started at the same time, gets in
  const b = await fleet.start({ name: 'b', bootstrap: [a] })

  const onA = await waitForLog(a, /different fleet key/)
  const onMallory = await waitForLog(mallory, /different fleet key/)
  expect(onA).toMatchObject({ level: 40, fleetKey: fleetKeyFingerprint(fleet.fleetKey) })
  expect(onMallory).toMatchObject({ level: 40, fleetKey: fleetKeyFingerprint(otherKey) })
  await waitFor(() => b.catalog.getApp('web'), { what: 'web on the control node' })

  expect(mallory.gossip.connectedPeers()).toEqual([])
  expect(a.gossip.connectedPeers()).toEqual([b.gossip.peerId])
  expect(mallory.catalog.getApp('web')).toBeUndefined()
  expect(a.gossip.stats().handshakeFailures).toBeGreaterThanOrEqual(1)
  expect(mallory.gossip.stats().dialFailures).toBeGreaterThanOrEqual(1)
})
