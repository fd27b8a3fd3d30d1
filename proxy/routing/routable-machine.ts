import type { DesiredState, MachineRecord, MachineState } from '../../schemas/catalog-records.js'

/** What routing needs to know about one Machine; updated in place by the routing index. */
export interface RoutableMachine {
  readonly id: string
  readonly app: string
  region: string
  node: string
  processGroup: string
  state: MachineState
  /** What the control plane asked for (autostart and autostop tell a Machine on its way from one at rest). */
  desired: DesiredState
  ready: boolean
  /** Some check of the Machine is critical (FLY-SPEC §3: every check must pass). */
  critical: boolean
  cordoned: boolean
  /** Loopback IP the Machine listens on (DESIGN §5); undefined until the supervisor assigns one. */
  privateAddr: string | undefined
}

export function toRoutable(m: MachineRecord): RoutableMachine {
  return {
    id: m.id,
    app: m.app,
    region: m.region,
    node: m.node,
    processGroup: m.spec.processGroup,
    state: m.state,
    desired: m.desired,
    ready: m.ready,
    critical: hasCritical(m.checks),
    cordoned: m.cordoned,
    privateAddr: m.privateAddr,
  }
}

export function hasCritical(checks: Record<string, string>): boolean {
  for (const k in checks) if (checks[k] === 'critical') return true
  return false
}

/** Why a Machine takes no traffic, in words for `route explain` and error messages; undefined when it may. */
export function ineligibleReason(m: RoutableMachine, processes: readonly string[], nodeDown: boolean): string | undefined {
  if (m.state !== 'started') return `state is ${m.state}`
  if (!m.ready) return 'not ready (no passing check since start)'
  if (m.critical) return 'a health check is critical'
  if (m.cordoned) return 'cordoned'
  if (m.privateAddr === undefined) return 'no private address yet'
  if (nodeDown) return `its node ${m.node} is down`
  if (processes.length > 0 && !processes.includes(m.processGroup)) return `process group "${m.processGroup}" does not run this service`
  return undefined
}
