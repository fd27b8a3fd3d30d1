import { expect, test } from 'vitest'
import { webConfig } from '../../catalog/test/fixtures.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { useTestFleet, waitForConvergence, waitForMesh } from './fleet-harness.js'

const fleet = useTestFleet()

test('three nodes bootstrapped from one seed: a change on A appears on C, and A and C meet without the seed', async () => {
  const seed = await fleet.start({ name: 'seed' })
  // one joins with the seed's peer id, one with a bare address: both forms of --bootstrap work
  const a = await fleet.start({ name: 'a', bootstrap: [seed] })
  const c = await fleet.start({ name: 'c', bootstrap: [seed.address.split('/p2p/')[0]] })
  await waitForMesh([seed, a, c], 2)
  // peer exchange through the membership records: A and C are connected directly, not through a star
  expect(a.gossip.connectedPeers()).toContain(c.gossip.peerId)

  await a.catalog.deployApp(webConfig('web'))

  await waitFor(() => c.catalog.getApp('web'), { what: 'app web on c' })
  expect(c.gossip.stats().changesApplied).toBeGreaterThanOrEqual(1)
  expect(c.events.find((e) => e.type === 'app.upserted')).toMatchObject({ origin: 'a', app: { name: 'web' } })
  await waitForConvergence([seed, a, c])
})

test('five nodes writing the same app document at once end with identical heads', async () => {
  const first = await fleet.start({ name: 'n1' })
  const rest = []
  for (const name of ['n2', 'n3', 'n4', 'n5']) rest.push(await fleet.start({ name, bootstrap: [first] }))
  const all = [first, ...rest]
  await waitForMesh(all, 2)
  await first.catalog.deployApp(webConfig('web'))
  await waitFor(() => all.every((n) => n.catalog.getApp('web') !== undefined), { what: 'app web everywhere' })

  await Promise.all(all.map(async (n) => {
    for (let i = 0; i < 8; i++) await n.catalog.createMachine({ app: 'web', region: 'ams', node: n.name, spec: { cmd: ['sleep', String(i)] } })
  }))

  // heads first, then the records: a node's digest moves when a batch is staged, its events when it is durable
  await waitForConvergence(all, 15_000)
  await waitFor(() => all.every((n) => n.catalog.listMachines({ app: 'web' }).length === 40), { what: '40 Machines on every node' })
  const ids = (n: typeof first) => n.catalog.listMachines({ app: 'web' }).map((m) => m.id).sort()
  for (const n of rest) expect(ids(n)).toEqual(ids(first))
})
