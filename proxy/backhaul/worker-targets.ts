import type { CatalogReader } from '../../catalog/catalog-api.js'
import type { BackhaulOpen } from '../../schemas/backhaul.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { type RoutableMachine, toRoutable } from '../routing/routable-machine.js'

/** What a worker may connect an OPEN to: a Machine it hosts, on a port one of its app's services uses. */
export interface WorkerTargets {
  resolve(open: BackhaulOpen): RoutableMachine | EdgeProxyError
}

/**
 * The worker's check of an OPEN against its own catalog (in-memory reads: the catalog's read model is a
 * fold of events). An edge's view may be stale by a few hundred ms (FLY-SPEC §1): a Machine that stopped
 * or moved is refused before anything is sent, so the edge retries another one (Fly's PM11, PR02).
 */
export function catalogTargets(catalog: Pick<CatalogReader, 'nodeName' | 'getMachine' | 'getApp'>): WorkerTargets {
  const self = catalog.nodeName
  return {
    resolve(open) {
      const m = catalog.getMachine(open.machine)
      if (m === undefined || m.node !== self) {
        return new EdgeProxyError('EP_MACHINE_NOT_FOUND', `Machine ${open.machine} is not hosted on node ${self}${m === undefined ? '' : ` (it runs on ${m.node})`}`)
      }
      if (m.state !== 'started') return new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${m.id} is ${m.state} on node ${self}`)
      if (m.privateAddr === undefined) return new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${m.id} has no private address yet on node ${self}`)
      const services = catalog.getApp(m.app)?.config.services ?? []
      if (!services.some((s) => s.internal_port === open.port)) {
        return new EdgeProxyError('EP_NO_SERVICE', `port ${open.port} is not the internal_port of a service of app "${m.app}"; the backhaul reaches service ports only`)
      }
      return toRoutable(m)
    },
  }
}
