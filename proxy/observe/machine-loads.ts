import type { RoutingIndex } from '../routing/routing-index.js'

export interface MachineLoad {
  app: string
  /** Index of the service in the app's config. */
  service: number
  machine: string
  /** Open connections or in-flight requests, as the service's concurrency type says. */
  load: number
  type: 'connections' | 'requests'
}

/** Load per Machine and service as this proxy counts it, and requests queued for capacity (metrics, dashboard). */
export function machineLoads(index: RoutingIndex): { loads: MachineLoad[]; queued: number } {
  const loads: MachineLoad[] = []
  let queued = 0
  for (const app of index.allApps()) {
    for (const s of app.services) {
      queued += s.waiters?.length ?? 0
      for (const [machine, cell] of s.loads) loads.push({ app: app.name, service: s.index, machine, load: cell.n, type: s.countsRequests ? 'requests' : 'connections' })
    }
  }
  return { loads, queued }
}
