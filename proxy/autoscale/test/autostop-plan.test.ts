import { describe, expect, test } from 'vitest'
import { RoutingIndex } from '../../routing/routing-index.js'
import type { RoutableMachine } from '../../routing/routable-machine.js'
import { EventFeed } from '../../test/events.js'
import { groupPolicy, loadOf, planRegion, type StopView, stopPassLeader } from '../autostop-plan.js'
import { ForwardedLoad } from '../forwarded-load.js'

/** A routing index with one app; its services come from fly.toml, its Machines from catalog events. */
function app(toml: string) {
  const feed = new EventFeed()
  const index = new RoutingIndex()
  index.apply(feed.app('web', toml))
  const route = () => index.app('web')!
  const machine = (over: Parameters<EventFeed['machine']>[1] = {}): RoutableMachine => {
    const e = feed.machine('web', over)
    index.apply(e)
    return route().machines.get(e.machine.id)!
  }
  return { index, route, machine }
}

const SERVICE = (extra: string, processes = '') => `primary_region = "ams"\n[[services]]\ninternal_port = 8080\n${processes}${extra}\n[services.concurrency]\ntype = "requests"\nsoft_limit = 10\nhard_limit = 20\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`

function views(t: ReturnType<typeof app>, loads: number[], local: (i: number) => boolean = () => true): StopView[] {
  return loads.map((load, i) => {
    const m = t.machine()
    t.route().services[0].cellFor(m.id).n = load
    return { machine: m, ...loadOf(t.route().services, m.id), local: local(i) }
  })
}

describe('the stop pass of one region (FLY-SPEC §5)', () => {
  test('excess = running − (over + 1): three idle Machines give excess 2, and the least loaded goes first', () => {
    const t = app(SERVICE('auto_stop_machines = "stop"'))
    const v = views(t, [3, 1, 2])
    const d = planRegion(v, true, (g) => groupPolicy(t.route().services, g))
    expect(d).toMatchObject({ machine: v[1].machine, mode: 'stopped', excess: 2, reason: 'autostop: excess=2' })
  })

  test('Machines at or past soft_limit count as over: two over and one idle leave no excess', () => {
    const t = app(SERVICE('auto_stop_machines = "stop"'))
    const v = views(t, [10, 12, 0])
    expect(planRegion(v, true, (g) => groupPolicy(t.route().services, g))).toBeUndefined()
  })

  test('a lone Machine stops only when its load is exactly 0', () => {
    const t = app(SERVICE('auto_stop_machines = "suspend"'))
    const busy = views(t, [1])
    expect(planRegion(busy, true, (g) => groupPolicy(t.route().services, g))).toBeUndefined()
    t.route().services[0].cellFor(busy[0].machine.id).n = 0
    const idle = [{ ...busy[0], load: 0, over: false }]
    expect(planRegion(idle, true, (g) => groupPolicy(t.route().services, g))).toMatchObject({ mode: 'suspended', reason: 'autostop: idle' })
  })

  test('min_machines_running holds in the primary region only', () => {
    const t = app(SERVICE('auto_stop_machines = "stop"\nmin_machines_running = 2'))
    const v = views(t, [0, 0])
    const policy = (g: string) => groupPolicy(t.route().services, g)
    expect(planRegion(v, true, policy)).toBeUndefined()
    expect(planRegion(v, false, policy)).toMatchObject({ excess: 1 })
  })

  test('a Machine hosted elsewhere counts as busy (its load is not known here) and is never chosen', () => {
    const t = app(SERVICE('auto_stop_machines = "stop"'))
    // two remote idle Machines and one local idle one: the local node may not assume the remote ones idle
    const v = views(t, [0, 0, 0], (i) => i === 0)
    expect(planRegion(v, false, (g) => groupPolicy(t.route().services, g))).toBeUndefined()
    const w = views(t, [0, 0, 0, 0], (i) => i < 3)
    expect(planRegion(w, false, (g) => groupPolicy(t.route().services, g))).toMatchObject({ excess: 2, machine: w[0].machine })
  })

  test('streams forwarded to a Machine over the backhaul count as its load: a Machine busy with other edges\' traffic is not idle', () => {
    const t = app(SERVICE('auto_stop_machines = "stop"'))
    const forwarded = new ForwardedLoad()
    const [m] = views(t, [0])
    forwarded.add(m.machine.id, 1)
    const services = t.route().services
    const busy = { machine: m.machine, ...loadOf(services, m.machine.id, forwarded.of(m.machine.id)), local: true }
    expect(busy).toMatchObject({ load: 1, over: false })
    expect(planRegion([busy], true, (g) => groupPolicy(services, g))).toBeUndefined()
    for (let i = 0; i < 10; i++) forwarded.add(m.machine.id, 1)
    expect(loadOf(services, m.machine.id, forwarded.of(m.machine.id))).toEqual({ load: 11, over: true })
    for (let i = 0; i < 11; i++) forwarded.add(m.machine.id, -1)
    expect(planRegion([{ machine: m.machine, ...loadOf(services, m.machine.id, forwarded.of(m.machine.id)), local: true }], true, (g) => groupPolicy(services, g))).toMatchObject({ reason: 'autostop: idle' })
  })

  test('auto_stop_machines = "off" on any service of the group keeps its Machines; a group without services is never stopped', () => {
    const t = app(`primary_region = "ams"\n[processes]\nweb = "a"\nworker = "b"\n[[services]]\ninternal_port = 8080\nprocesses = ["web"]\nauto_stop_machines = "stop"\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n[[services]]\ninternal_port = 9090\nprocesses = ["web"]\nauto_stop_machines = "off"\n[[services.ports]]\nport = 9090\n`)
    expect(groupPolicy(t.route().services, 'web')).toBeUndefined()
    expect(groupPolicy(t.route().services, 'worker')).toBeUndefined()
  })
})

describe('one stop per region per pass across the fleet', () => {
  test('the hosts of a region take turns, and every node agrees whose turn it is', () => {
    const hosts = ['iad-2', 'iad-1', 'iad-1', 'iad-3']
    expect([0, 1, 2, 3, 4].map((slot) => stopPassLeader(hosts, slot))).toEqual(['iad-1', 'iad-2', 'iad-3', 'iad-1', 'iad-2'])
    expect(stopPassLeader([...hosts].reverse(), 7)).toBe(stopPassLeader(hosts, 7))
    expect(stopPassLeader([], 3)).toBeUndefined()
  })

  test('two nodes each hosting idle Machines of one region never both stop one in the same pass', () => {
    const t = app(SERVICE('auto_stop_machines = "stop"'))
    const nodes = ['n1', 'n2']
    const machines = [0, 1, 2, 3].map((i) => t.machine({ node: nodes[i % 2] }))
    for (let slot = 0; slot < 6; slot++) {
      const deciders = nodes.filter((self) => {
        if (stopPassLeader(machines.map((m) => m.node), slot) !== self) return false
        const v = machines.map((m) => ({ machine: m, load: 0, over: false, local: m.node === self }))
        return planRegion(v, false, (g) => groupPolicy(t.route().services, g)) !== undefined
      })
      expect(deciders).toHaveLength(1)
      expect(deciders[0]).toBe(nodes[slot % 2])
    }
  })
})
