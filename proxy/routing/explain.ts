import type { Balancer } from './balancer.js'
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
}

export function explainRoute(index: RoutingIndex, balancer: Balancer, closeness: Closeness, host: string, publicPort: number): RouteExplanation {
  const app = index.appForHost(host.toLowerCase())
  const out: RouteExplanation = { host, publicPort, app: app?.name, candidates: [], excluded: [] }
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
  return out
}
