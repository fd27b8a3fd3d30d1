import type { Balancer, RoutingHints } from './balancer.js'
import type { Closeness } from './closeness.js'
import { ineligibleReason } from './routable-machine.js'
import type { RoutingIndex } from './routing-index.js'

/** What `edgeproxy route explain HOST [PORT]` shows: the decision inputs for one host and port. */
export interface RouteExplanation {
  host: string
  publicPort: number
  app: string | undefined
  /** Why nothing routes, when nothing does. */
  problem?: string
  service?: { index: number; internalPort: number; type: 'connections' | 'requests'; softLimit: number; hardLimit: number | null; waiting: number }
  /** Eligible Machines in the order regions are tried. */
  candidates: Array<{ machine: string; region: string; node: string; rttMs: number; load: number; tier: 'T0' | 'T1' | 'T2' }>
  excluded: Array<{ machine: string; region: string; reason: string }>
  /** Routing headers taken into account. */
  hints?: RoutingHints
  /** What the balancer picks now (ties among equally loaded Machines are broken at random). */
  choice?: { machine: string; region: string; node: string; tier: 'T0' | 'T1'; load: number } | { none: 'none' | 'capacity' }
  /** The choice in words. */
  why?: string
}

export function explainRoute(index: RoutingIndex, balancer: Balancer, closeness: Closeness, host: string, publicPort: number, hints?: RoutingHints): RouteExplanation {
  const app = index.appForHost(host.toLowerCase())
  const out: RouteExplanation = { host, publicPort, app: app?.name, candidates: [], excluded: [], ...(hints === undefined ? {} : { hints }) }
  if (app === undefined) return { ...out, problem: `no app answers to "${host}"` }
  const route = app.ports.get(publicPort)
  if (route === undefined) return { ...out, problem: `app "${app.name}" has no service on port ${publicPort}` }
  const s = route.service
  out.service = {
    index: s.index, internalPort: s.config.internal_port, type: s.countsRequests ? 'requests' : 'connections',
    softLimit: s.softLimit, hardLimit: Number.isFinite(s.hardLimit) ? s.hardLimit : null, waiting: s.waiters?.length ?? 0,
  }
  for (const group of balancer.candidates(s).regions) {
    for (const c of group.candidates) {
      const load = c.cell.n
      const tier = load < s.softLimit ? 'T0' : load < s.hardLimit ? 'T1' : 'T2'
      out.candidates.push({ machine: c.machine.id, region: group.region, node: c.machine.node, rttMs: Math.round(closeness.rttTo(c.machine.node, group.region)), load, tier })
    }
  }
  for (const m of app.machines.values()) {
    const reason = ineligibleReason(m, s.config.processes, index.isNodeDown(m.node))
    if (reason !== undefined) out.excluded.push({ machine: m.id, region: m.region, reason })
  }
  if (out.candidates.length === 0) out.problem = 'no eligible Machine'
  // the balancer's own pick, as a request would get it (a dry run: no load is leased)
  const picked = balancer.pick(s, hints)
  if (picked === 'none' || picked === 'capacity') {
    out.choice = { none: picked }
    out.why = picked === 'none'
      ? `no Machine can take it${hints === undefined ? '' : ' within the routing headers'}: every Machine of the app is excluded (see excluded)`
      : `every eligible Machine is at hard_limit ${out.service.hardLimit}: the request would queue, then get 503 EP_CAPACITY`
    return out
  }
  const chosen = out.candidates.find((c) => c.machine === picked.machine.id)
  const region = chosen?.region ?? picked.machine.region
  const load = picked.cell.n
  const tier = load < s.softLimit ? 'T0' : 'T1'
  out.choice = { machine: picked.machine.id, region, node: picked.machine.node, tier, load }
  const regionsBefore = [...new Set(out.candidates.map((c) => c.region))]
  const closer = regionsBefore.slice(0, Math.max(0, regionsBefore.indexOf(region)))
  const tied = out.candidates.filter((c) => c.region === region && c.load === load && c.tier === tier).length
  const parts = [
    hints?.forceInstance !== undefined ? `fly-force-instance-id names it` : hints?.preferInstance === picked.machine.id ? 'fly-prefer-instance-id names it and it has room' : undefined,
    closer.length === 0 ? `${region} is the closest region with a Machine that has room` : `closer regions (${closer.join(', ')}) have no Machine under hard_limit`,
    tier === 'T0' ? `it is under soft_limit ${s.softLimit} (T0)` : `no ${region} Machine is under soft_limit, it is under hard_limit (T1)`,
    tied > 1 ? `least loaded (${load}), one of ${tied} tied, picked at random` : `least loaded (${load})`,
  ]
  out.why = parts.filter((p) => p !== undefined).join('; ')
  return out
}
