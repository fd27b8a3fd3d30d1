import type { Logger } from 'pino'
import type { CheckStatus, MachineRecord, MachineState } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import type { HealthState } from './health/machine-health.js'
import type { SupervisorCatalog } from './supervisor-options.js'

export interface Observed { state: MachineState; reason: string; privateAddr: string | undefined }

/**
 * What the host writes about one Machine: observed state and health, each only when it changed (issue 5),
 * and all of one Machine's writes in the order they were made — a `stopped` never overtakes its `stopping`.
 */
export class MachineReporter {
  private current: Observed
  private health: HealthState
  private writes: Promise<void> = Promise.resolve()

  constructor(private readonly id: string, record: MachineRecord, private readonly catalog: SupervisorCatalog, private readonly log: Logger) {
    this.current = { state: record.state, reason: record.stateReason, privateAddr: record.privateAddr }
    this.health = { checks: record.checks, ready: record.ready }
  }

  /** The last state reported (or found in the catalog at start). */
  get observed(): Observed { return this.current }
  get lastHealth(): HealthState { return this.health }

  /** Resolves once the write is in the catalog (or failed and was logged). */
  observe(state: MachineState, reason: string, privateAddr?: string): Promise<void> {
    const addr = privateAddr ?? this.current.privateAddr
    if (this.current.state === state && this.current.reason === reason && this.current.privateAddr === addr) return this.writes
    this.current = { state, reason, privateAddr: addr }
    return this.enqueue(() => this.catalog.reportObserved(this.id, { state, reason, privateAddr }), `report ${state}`)
  }

  reportHealth(state: HealthState): void {
    if (state.ready === this.health.ready && sameChecks(state.checks, this.health.checks)) return
    this.health = state
    void this.enqueue(() => this.catalog.reportHealth(this.id, state), 'report health')
  }

  /** Any other write about this Machine that must keep its place in line. */
  enqueue(write: () => Promise<void>, what: string): Promise<void> {
    this.writes = this.writes.then(write).catch((err) => {
      // the Machine may have been removed meanwhile, or the catalog closed at shutdown: the write has no target
      const level = EdgeProxyError.is(err, 'EP_MACHINE_NOT_FOUND') || EdgeProxyError.is(err, 'EP_CATALOG_CLOSED') ? 'debug' : 'error'
      this.log[level]({ err, what }, 'catalog write for machine failed')
    })
    return this.writes
  }

  /** Resolves when every write made so far is done. */
  flushed(): Promise<void> {
    return this.writes
  }
}

function sameChecks(a: Record<string, CheckStatus>, b: Record<string, CheckStatus>): boolean {
  const keys = Object.keys(a)
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k])
}
