import { describe, expect, test } from 'vitest'
import type { MachineRecord } from '../../../schemas/catalog-records.js'
import { Closeness } from '../../routing/closeness.js'
import { RoutingIndex } from '../../routing/routing-index.js'
import { EventFeed, HTTP_SERVICE } from '../../test/events.js'
import { wakeCandidates, wakeKind } from '../wake-candidates.js'

/** Node n1 in ams (this node), n2 in iad, n3 in syd; one app `web`. */
function setup() {
  const feed = new EventFeed()
  const index = new RoutingIndex()
  for (const e of [feed.node('n1', 'ams'), feed.node('n2', 'iad'), feed.node('n3', 'syd'), feed.app('web', HTTP_SERVICE())]) index.apply(e)
  const closeness = new Closeness('n1', 'ams', undefined)
  const machine = (over: Partial<MachineRecord>): string => {
    const e = feed.machine('web', { desired: 'stopped', state: 'stopped', ready: false, ...over })
    index.apply(e)
    return e.machine.id
  }
  const wake = (hints?: Parameters<typeof wakeCandidates>[3]) => wakeCandidates(index, closeness, index.app('web')!.services[0], hints)
  return { feed, index, machine, wake }
}

describe('which Machine autostart wakes (FLY-SPEC §5)', () => {
  test('the nearest region that has one; within it a suspended Machine before a stopped one', () => {
    const t = setup()
    const syd = t.machine({ region: 'syd', node: 'n3', state: 'suspended', desired: 'suspended' })
    const iadStopped = t.machine({ region: 'iad', node: 'n2' })
    const iadSuspended = t.machine({ region: 'iad', node: 'n2', state: 'suspended', desired: 'suspended' })
    expect(t.wake().startable.map((c) => c.machine.id)).toEqual([iadSuspended, iadStopped, syd])
    const ams = t.machine({ region: 'ams', node: 'n1' })
    expect(t.wake().startable[0].machine.id).toBe(ams)
  })

  test('failed and destroyed Machines are never woken; one already asked to start is joined, not started again', () => {
    const t = setup()
    t.machine({ state: 'failed', desired: 'started' })
    t.machine({ state: 'destroyed', desired: 'destroyed' })
    const booting = t.machine({ state: 'starting', desired: 'started' })
    const set = t.wake()
    expect(set.startable).toEqual([])
    expect(set.arriving.map((c) => c.machine.id)).toEqual([booting])
  })

  test('a Machine being drained by autostop can be reclaimed at once; Machines on a down node are skipped', () => {
    const t = setup()
    const draining = t.machine({ state: 'started', desired: 'started', cordoned: true, ready: true })
    const far = t.machine({ region: 'iad', node: 'n2' })
    t.index.apply(t.feed.nodeDown('n2'))
    expect(t.wake().startable.map((c) => [c.machine.id, c.kind])).toEqual([[draining, 'reclaim']])
    expect(t.wake().startable.map((c) => c.machine.id)).not.toContain(far)
  })

  test('fly-force-region limits the choice; fly-force-instance-id names it', () => {
    const t = setup()
    t.machine({ region: 'ams', node: 'n1' })
    const iad = t.machine({ region: 'iad', node: 'n2' })
    const syd = t.machine({ region: 'syd', node: 'n3' })
    expect(t.wake({ forceRegions: ['syd'] }).startable.map((c) => c.machine.id)).toEqual([syd])
    expect(t.wake({ preferRegions: ['syd'] }).startable[0].machine.id).toBe(syd)
    expect(t.wake({ forceInstance: iad }).startable.map((c) => c.machine.id)).toEqual([iad])
  })

  test('a started, ready Machine is not something to wake (it routes, or it is unhealthy)', () => {
    const t = setup()
    const id = t.machine({ state: 'started', desired: 'started', ready: true })
    expect(wakeKind(t.index.machines.get(id)!)).toBeUndefined()
  })
})
