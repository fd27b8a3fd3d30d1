import type { Catalog } from '../../catalog/index.js'
import type { Role } from '../../schemas/catalog-records.js'

/** Live facts about a node that the catalog does not hold (liveness and RTT come from gossip). */
export interface NodeLiveness {
  isUp(node: string): boolean
  rttMs(node: string): number | undefined
}

export interface MachineLogsReader {
  read(machineId: string, options: { follow: boolean; tail: number; signal: AbortSignal }): AsyncIterable<string>
}

export interface AdminApiComponents {
  catalog: Catalog
  self: { name: string; region: string; roles: Role[] }
  liveness?: NodeLiveness
  logs?: MachineLogsReader
  /** Prometheus text for /metrics. */
  metrics?: () => Promise<string>
}
