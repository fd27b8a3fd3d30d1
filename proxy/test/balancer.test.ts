import { describe, expect, test } from 'vitest'
import { Balancer, type PickResult, type RoutingHints } from '../routing/balancer.js'
import { Closeness } from '../routing/closeness.js'
import { RoutingIndex } from '../routing/routing-index.js'
import type { Candidate, ServiceRoute } from '../routing/service-route.js'
import { EventFeed, HTTP_SERVICE } from './events.js'

/** Index + balancer on node n1 in ams, with nodes in ams (n1), iad (n2) and syd (n3). */
function setup(concurrency = 'soft_limit = 2\nhard_limit = 3') {
  const feed = new EventFeed()
  const index = new RoutingIndex()
  const balancer = new Balancer(index, new Closeness('n1', 'ams', undefined), () => 0.5)
  const apply = (...events: ReturnType<EventFeed['app']>[]) => { for (const e of events) index.apply(e) }
  apply(feed.node('n1', 'ams'), feed.node('n2', 'iad'), feed.node('n3', 'syd'))
  apply(feed.app('web', HTTP_SERVICE(`[services.concurrency]\ntype = "requests"\n${concurrency}`)))
  const service = (): ServiceRoute => index.app('web')!.services[0]
  const machine = (over: Parameters<EventFeed['machine']>[1] = {}) => {
    const e = feed.machine('web', over)
    apply(e)
    return e.machine.id
  }
  const pick = (hints?: RoutingHints): PickResult => balancer.pick(service(), hints)
  const load = (id: string, n: number) => { service().cellFor(id).n = n }
  return { feed, index, apply, service, machine, pick, load }
}

const idOf = (r: PickResult): string => (typeof r === 'object' ? (r as Candidate).machine.id : r)

describe('balancer tiers and regions (FLY-SPEC §3)', () => {
  test('least loaded Machine under soft_limit in the closest region', () => {
    const t = setup()
    const a = t.machine()
    const b = t.machine()
    t.machine({ region: 'iad', node: 'n2' })
    t.load(a, 1)
    expect(idOf(t.pick())).toBe(b)
  })

  test('under hard_limit when every local Machine is at soft_limit: the soft limit never moves traffic away', () => {
    const t = setup()
    const a = t.machine()
    const far = t.machine({ region: 'iad', node: 'n2' })
    t.load(a, 2)
    expect(idOf(t.pick())).toBe(a)
    t.load(a, 3) // at hard_limit: T2, no new traffic
    expect(idOf(t.pick())).toBe(far)
  })

  test('regions are tried closest first: iad before syd from ams', () => {
    const t = setup()
    const syd = t.machine({ region: 'syd', node: 'n3' })
    const iad = t.machine({ region: 'iad', node: 'n2' })
    expect(idOf(t.pick())).toBe(iad)
    t.load(iad, 3)
    expect(idOf(t.pick())).toBe(syd)
  })

  test('all at hard_limit is capacity; nothing eligible is none', () => {
    const t = setup()
    expect(t.pick()).toBe('none')
    const a = t.machine()
    t.load(a, 3)
    expect(t.pick()).toBe('capacity')
  })

  test('stopped, not ready, critical, cordoned, other process group and Machines on a down node take no traffic', () => {
    const t = setup()
    t.machine({ state: 'stopped' })
    t.machine({ ready: false })
    t.machine({ checks: { http: 'critical' } })
    t.machine({ cordoned: true })
    t.machine({ spec: { cmd: ['x'], env: {}, processGroup: 'worker' } })
    t.machine({ region: 'iad', node: 'n2' })
    t.apply(t.feed.nodeDown('n2'))
    expect(t.pick()).toBe('none')
    const ok = t.machine({ checks: { http: 'warning' } })
    expect(idOf(t.pick())).toBe(ok)
  })

  test('a health change takes a Machine out and back in', () => {
    const t = setup()
    const a = t.machine()
    t.apply(t.feed.health('web', a, { http: 'critical' }))
    expect(t.pick()).toBe('none')
    t.apply(t.feed.health('web', a, { http: 'passing' }))
    expect(idOf(t.pick())).toBe(a)
  })
})

describe('routing headers', () => {
  test('fly-prefer-region goes to the listed region and falls back anywhere', () => {
    const t = setup()
    t.machine()
    const syd = t.machine({ region: 'syd', node: 'n3' })
    expect(idOf(t.pick({ preferRegions: ['syd'] }))).toBe(syd)
    t.load(syd, 3)
    expect(idOf(t.pick({ preferRegions: ['syd'] }))).not.toBe(syd)
  })

  test('fly-force-region never leaves the list; aliases expand', () => {
    const t = setup()
    t.machine()
    expect(t.pick({ forceRegions: ['syd'] })).toBe('none')
    const syd = t.machine({ region: 'syd', node: 'n3' })
    expect(idOf(t.pick({ forceRegions: ['apac'] }))).toBe(syd)
    t.load(syd, 3)
    expect(t.pick({ forceRegions: ['syd'] })).toBe('capacity')
  })

  test('fly-prefer-instance-id uses that Machine when it can take the request, another one otherwise', () => {
    const t = setup()
    const a = t.machine()
    const b = t.machine()
    t.load(a, 1)
    expect(idOf(t.pick({ preferInstance: a }))).toBe(a)
    t.load(a, 3)
    expect(idOf(t.pick({ preferInstance: a }))).toBe(b)
  })

  test('fly-force-instance-id: that Machine only', () => {
    const t = setup()
    const a = t.machine()
    t.machine()
    expect(idOf(t.pick({ forceInstance: a }))).toBe(a)
    t.load(a, 3)
    expect(t.pick({ forceInstance: a })).toBe('capacity')
    expect(t.pick({ forceInstance: 'ffffffffffffff' })).toBe('none')
  })
})

describe('routing index', () => {
  test('hosts map to apps by <app>.<domain>, custom names and wildcards; removal forgets them', () => {
    const feed = new EventFeed()
    const index = new RoutingIndex({ domain: 'example.net' })
    index.apply(feed.app('web', HTTP_SERVICE(), ['www.shop.test', '*.tenants.test']))
    expect(index.appForHost('web.example.net')?.name).toBe('web')
    expect(index.appForHost('www.shop.test')?.name).toBe('web')
    expect(index.appForHost('acme.tenants.test')?.name).toBe('web')
    expect(index.appForHost('a.b.tenants.test')).toBeUndefined()
    index.apply(feed.appRemoved('web'))
    expect(index.appForHost('web.example.net')).toBeUndefined()
  })

  test('a host name claimed by two apps stays with the first until it lets go', () => {
    const feed = new EventFeed()
    const index = new RoutingIndex()
    index.apply(feed.app('one', HTTP_SERVICE(), ['shared.test']))
    index.apply(feed.app('two', HTTP_SERVICE(), ['shared.test']))
    expect(index.appForHost('shared.test')?.name).toBe('one')
    index.apply(feed.appRemoved('one'))
    expect(index.appForHost('shared.test')?.name).toBe('two')
  })

  test('a gap in the event sequence is refused', () => {
    const feed = new EventFeed()
    const index = new RoutingIndex()
    index.apply(feed.app('web', HTTP_SERVICE()))
    feed.seq++
    expect(() => index.apply(feed.app('x', HTTP_SERVICE()))).toThrow(/expected event 2, got 3/)
  })

  test('load survives a redeploy of the same service', () => {
    const t = setup()
    const a = t.machine()
    const before = t.service().cellFor(a)
    before.n = 2
    t.apply(t.feed.app('web', HTTP_SERVICE('[services.concurrency]\ntype = "requests"\nsoft_limit = 5')))
    expect(t.service().cellFor(a)).toBe(before)
    expect(t.service().softLimit).toBe(5)
  })
})
