import type { Service, ServicePortConfig } from '../../schemas/app-config.js'
import type { ResponseEdits } from '../http/response-edits.js'
import type { RoutableMachine } from './routable-machine.js'

/**
 * Load of one Machine for one service: open connections or in-flight requests, as the service's
 * concurrency type says (FLY-SPEC §3). A lease holds the cell itself, so a redeploy that rebuilds the
 * service keeps counting into the same cell.
 */
export interface LoadCell {
  n: number
  owner: ServiceRoute
}

/** A Machine that may take traffic for a service, with its load for that service. */
export interface Candidate {
  readonly machine: RoutableMachine
  readonly cell: LoadCell
}

export interface RegionGroup {
  readonly region: string
  /** Closest node of the region, ms (closeness.ts). */
  readonly rtt: number
  readonly candidates: Candidate[]
}

/** Eligible Machines of a service, regions closest first; rebuilt when any input changed. */
export interface CandidateSet {
  readonly appVersion: number
  readonly nodesVersion: number
  readonly closenessEpoch: number
  readonly regions: RegionGroup[]
  readonly byId: Map<string, Candidate>
  readonly total: number
}

/** Something waiting for capacity on this service (capacity-queue.ts). */
export interface CapacityWaiters {
  readonly length: number
  pump(): void
}

/** One `[[services]]` entry of a deployed app, with the live load of its Machines. */
export class ServiceRoute {
  readonly softLimit: number
  /** Infinity when the service sets no hard_limit (FLY-SPEC §2: unset = no limit). */
  readonly hardLimit: number
  readonly countsRequests: boolean
  readonly loads: Map<string, LoadCell>
  candidates: CandidateSet | undefined
  waiters: CapacityWaiters | undefined

  constructor(
    /** The app's route; its version tells when the candidate set is stale. */
    readonly appRoute: { readonly version: number },
    readonly app: string,
    readonly index: number,
    readonly config: Service,
    previous: ServiceRoute | undefined,
  ) {
    this.softLimit = config.concurrency.soft_limit
    this.hardLimit = config.concurrency.hard_limit ?? Number.POSITIVE_INFINITY
    this.countsRequests = config.concurrency.type === 'requests'
    this.loads = previous?.loads ?? new Map()
    for (const cell of this.loads.values()) cell.owner = this
    this.waiters = previous?.waiters
  }

  cellFor(machineId: string): LoadCell {
    let cell = this.loads.get(machineId)
    if (cell === undefined) {
      cell = { n: 0, owner: this }
      this.loads.set(machineId, cell)
    }
    return cell
  }

  /** Sum of the service's load over its Machines (for stats and autostop later). */
  totalLoad(): number {
    let sum = 0
    for (const cell of this.loads.values()) sum += cell.n
    return sum
  }
}

/** One public port of an app: the service that owns it and that port's handler settings. */
export interface PortRoute {
  readonly publicPort: number
  readonly service: ServiceRoute
  readonly port: ServicePortConfig
  /** `http_options.response`, compiled at deploy time. */
  readonly edits: ResponseEdits
}
