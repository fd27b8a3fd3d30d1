import { flycastOwners } from '../../schemas/flycast.js'
import { frontOf, isHttp, type PortPlan } from '../routing/port-plan.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import type { PortRoute } from '../routing/service-route.js'

/** One app's Flycast listeners: its private address and a plan per service port (the external port). */
export interface FlycastApp {
  readonly app: string
  readonly address: string
  readonly plans: Map<number, PortPlan>
}

export interface FlycastPlans {
  readonly apps: Map<string, FlycastApp>
  /** Apps whose address another app owns (flycastOwners); they get no listener until re-allocated. */
  readonly conflicts: Array<{ app: string; address: string; owner: string }>
}

/**
 * What the Flycast listeners of this node should be (FLY-SPEC §9): for each app with an address, every
 * tcp service port bound on that address only, serving that app whatever Host or SNI says. `force_https`
 * is ignored there: no public certificate covers `<app>.flycast`, so plain HTTP is the norm.
 */
export function flycastPlans(index: RoutingIndex): FlycastPlans {
  const records = [...index.allApps()].flatMap((a) => (a.record === undefined ? [] : [a.record]))
  const owners = flycastOwners(records)
  const apps = new Map<string, FlycastApp>()
  const conflicts: FlycastPlans['conflicts'] = []
  for (const record of records) {
    const address = record.flycast
    if (address === undefined || address === '') continue
    const owner = owners.get(address)!
    if (owner !== record.name) { conflicts.push({ app: record.name, address, owner }); continue }
    const route = index.app(record.name)!
    const plans = new Map<number, PortPlan>()
    for (const [port, r] of route.ports) {
      const privateRoute: PortRoute = r.port.force_https ? { ...r, port: { ...r.port, force_https: false } } : r
      plans.set(port, {
        publicPort: port, front: frontOf(r), http: isHttp(r), apps: new Map([[record.name, privateRoute]]), first: record.name, conflicts: [], privateApp: record.name,
      })
    }
    apps.set(record.name, { app: record.name, address, plans })
  }
  return { apps, conflicts }
}
