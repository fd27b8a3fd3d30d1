import pino from 'pino'
import { afterEach, expect, test } from 'vitest'
import { webConfig } from '../../catalog/test/fixtures.js'
import { partition, useTestFleet, waitForConvergence, waitForMesh } from '../../gossip/test/fleet-harness.js'
import { allocateFlycastAddress, parseFlycastRange } from '../../schemas/flycast.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { FlycastAllocator } from '../admin-api/flycast-allocator.js'

const fleet = useTestFleet()
// the allocators stop before the fleet (hooks registered later run first)
const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

/** A tiny range, so that two app names whose probe sequences start on the same address are easy to find. */
const RANGE = parseFlycastRange('127.77.250.0/29')

function collidingNames(): [string, string] {
  const seen = new Map<string, string>()
  for (let i = 0; ; i++) {
    const name = `app-${i}`
    const addr = allocateFlycastAddress(RANGE, name, new Set())!
    const other = seen.get(addr)
    if (other !== undefined) return [other, name]
    seen.set(addr, name)
  }
}

test('two nodes allocating during a partition pick one address; after the heal the first name keeps it and the other moves, the same on both', async () => {
  const a = await fleet.start({ name: 'a', relayed: true })
  const b = await fleet.start({ name: 'b', relayed: true, bootstrap: [a] })
  await waitForMesh([a, b], 1)
  const [first, second] = collidingNames() // first < second by name
  await a.catalog.deployApp(webConfig(first))
  await a.catalog.deployApp(webConfig(second))
  await waitFor(() => b.catalog.getApp(first) !== undefined && b.catalog.getApp(second) !== undefined, { what: 'both apps on b' })
  // each node's admin API runs one allocator: it allocates, and repairs clashes it sees
  const [onNodeA, onNodeB] = [a, b].map((n) => {
    const allocator = new FlycastAllocator(n.catalog, RANGE, pino({ level: 'silent' }))
    allocator.start()
    cleanup.push(() => allocator.stop())
    return allocator
  })

  // cut the link, then allocate one app on each side: neither can see the other's choice
  await partition([a], [b])
  const onA = await onNodeA.allocate(second)
  const onB = await onNodeB.allocate(first)
  const clash = onA.record.flycast!
  expect(onB.record.flycast).toBe(clash)

  a.relay!.reset()
  b.relay!.reset()
  await waitForConvergence([a, b])
  const settled = await waitFor(() => {
    const views = [a, b].map((n) => [n.catalog.getApp(first)?.flycast, n.catalog.getApp(second)?.flycast])
    const [va, vb] = views
    return va[0] === clash && va[1] !== clash && va[1] !== undefined && vb[0] === va[0] && vb[1] === va[1] ? va[1] : undefined
  }, { timeoutMs: 15_000, what: `${second} moved off ${clash} on both nodes` })
  expect(settled).toBe(allocateFlycastAddress(RANGE, second, new Set([clash])))
  await waitForConvergence([a, b])
})
