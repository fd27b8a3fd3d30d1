import type { Catalog } from '../../catalog/index.js'
import type { Role } from '../../schemas/catalog-records.js'
import type { RouteExplanation, RoutingHints } from '../../proxy/index.js'

/** Live facts about a node that the catalog does not hold (liveness and RTT come from gossip). */
export interface NodeLiveness {
  isUp(node: string): boolean
  rttMs(node: string): number | undefined
}

export interface MachineLogsReader {
  read(machineId: string, options: { follow: boolean; tail: number; signal: AbortSignal }): AsyncIterable<string>
}

/** The edge's routing decisions (the proxy), for `route explain`. */
export interface RouteExplainer {
  readonly domain: string
  explain(host: string, publicPort: number, hints?: RoutingHints): RouteExplanation
}

export interface AdminApiComponents {
  catalog: Catalog
  self: { name: string; region: string; roles: Role[] }
  liveness?: NodeLiveness
  logs?: MachineLogsReader
  route?: RouteExplainer
  /** Load per Machine (summed over its services) as this edge counts it, for the dashboard. */
  loads?: () => Record<string, number>
  /** Prometheus text for /metrics. */
  metrics?: () => Promise<string>
  /** CIDR Flycast addresses are allocated from (default 127.77.0.0/16); the same on every node of a fleet. */
  flycastRange?: string
}
