import type { CatalogEvent } from '../../schemas/catalog-events.js'
import { Balancer, type RoutingHints } from './balancer.js'
import { Closeness } from './closeness.js'
import { explainRoute, type RouteExplanation } from './explain.js'
import { RoutingIndex } from './routing-index.js'

export interface ExplainAtInit {
  domain: string
  /** The edge the request is imagined to arrive at: its region orders the candidates. */
  region: string
  host: string
  publicPort: number
  hints?: RoutingHints
}

/**
 * Explains a routing decision against the routing index rebuilt from the event log up to a seq, with the
 * same RoutingIndex and Balancer the proxy runs (`edgeproxy route explain --at SEQ`). The log carries no
 * load or measured RTT, so loads are 0 and distances come from the static region table.
 */
export async function explainAt(events: AsyncIterable<CatalogEvent>, init: ExplainAtInit): Promise<RouteExplanation & { seq: number }> {
  const index = new RoutingIndex({ domain: init.domain })
  for await (const e of events) index.apply(e)
  const closeness = new Closeness('(route-explain)', init.region, undefined)
  // a fixed tie-break keeps the explanation of a past state reproducible
  const balancer = new Balancer(index, closeness, () => 0)
  return { ...explainRoute(index, balancer, closeness, init.host, init.publicPort, init.hints), seq: index.lastSeq }
}
