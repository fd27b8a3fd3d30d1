import type { RoutableMachine } from '../routing/routable-machine.js'
import type { ServiceRoute } from '../routing/service-route.js'

/** What autostop does with one process group's idle Machines (the services that group runs decide). */
export interface GroupPolicy {
  readonly mode: 'stopped' | 'suspended'
  /** min_machines_running (primary region only). */
  readonly min: number
}

/** One Machine as the stop pass sees it. */
export interface StopView {
  readonly machine: RoutableMachine
  /** In-flight requests or open connections over all its services (leases of this node's proxy). */
  readonly load: number
  /** At or past soft_limit in any of its services (FLY-SPEC §5: how several services combine is unconfirmed). */
  readonly over: boolean
  /**
   * Hosted by this node, so `load` is all of it: the proxy in front of a node's own Machines counts every
   * request to them. A Machine of another node is counted as busy, since its load is not known here.
   */
  readonly local: boolean
}

export interface StopDecision {
  readonly machine: RoutableMachine
  readonly mode: 'stopped' | 'suspended'
  readonly excess: number
  /** Travels in the catalog events: `autostop: excess=2`, `autostop: idle`. */
  readonly reason: string
}

/**
 * Per process group: stopped only when every service the group runs allows it (a service with
 * auto_stop_machines = "off" keeps its Machines); suspended only when all of them say "suspend"; the
 * largest min_machines_running applies. A group that runs no service is never stopped: nothing would start it.
 */
export function groupPolicy(services: readonly ServiceRoute[], processGroup: string): GroupPolicy | undefined {
  let any = false
  let suspend = true
  let min = 0
  for (const s of services) {
    const c = s.config
    if (c.processes.length > 0 && !c.processes.includes(processGroup)) continue
    if (c.auto_stop_machines === 'off') return undefined
    any = true
    if (c.auto_stop_machines !== 'suspend') suspend = false
    if (c.min_machines_running > min) min = c.min_machines_running
  }
  return any ? { mode: suspend ? 'suspended' : 'stopped', min } : undefined
}

/**
 * The Machine's load across the services of its app, and whether any of them is at or past soft_limit.
 * `forwarded` (streams from other edges over the backhaul, forwarded-load.ts) cannot be told apart by
 * service, so it counts against each of them.
 */
export function loadOf(services: readonly ServiceRoute[], machineId: string, forwarded = 0): { load: number; over: boolean } {
  let load = forwarded
  let over = false
  for (const s of services) {
    const n = s.loads.get(machineId)?.n ?? 0
    load += n
    if (n + forwarded >= s.softLimit) over = true
  }
  return { load, over }
}

/**
 * The FLY-SPEC §5 stop pass for one region of one app: per process group, `running` started Machines of
 * which `over` are at or past soft_limit; with more than one, `excess = running − (over + 1)` and one is
 * stopped when excess ≥ 1; a lone Machine is stopped when its load is exactly 0. Never below the group's
 * min_machines_running in the primary region. At most one Machine per region per pass: the group with the
 * largest excess gives up its least-loaded Machine. Only a local Machine is ever chosen.
 *
 * `running` must hold the Machines that count as running: started, asked to stay started, not cordoned.
 */
export function planRegion(running: readonly StopView[], primary: boolean, policyOf: (processGroup: string) => GroupPolicy | undefined): StopDecision | undefined {
  const groups = new Map<string, StopView[]>()
  for (const v of running) {
    const list = groups.get(v.machine.processGroup)
    if (list === undefined) groups.set(v.machine.processGroup, [v])
    else list.push(v)
  }
  let best: { view: StopView; policy: GroupPolicy; excess: number; reason: string } | undefined
  for (const [group, views] of groups) {
    const policy = policyOf(group)
    if (policy === undefined) continue
    const floor = primary ? policy.min : 0
    if (views.length <= floor) continue
    let excess: number
    let reason: string
    let pick: StopView | undefined
    if (views.length === 1) {
      const only = views[0]
      if (!only.local || only.load !== 0) continue
      pick = only
      excess = 1
      reason = 'autostop: idle'
    } else {
      let over = 0
      for (const v of views) if (v.over || !v.local) over++
      excess = views.length - (over + 1)
      if (excess < 1) continue
      for (const v of views) {
        if (!v.local) continue
        if (pick === undefined || v.load < pick.load || (v.load === pick.load && v.machine.id < pick.machine.id)) pick = v
      }
      reason = `autostop: excess=${excess}`
    }
    if (pick === undefined) continue
    if (best === undefined || excess > best.excess || (excess === best.excess && pick.load < best.view.load)) best = { view: pick, policy, excess, reason }
  }
  return best === undefined ? undefined : { machine: best.view.machine, mode: best.policy.mode, excess: best.excess, reason: best.reason }
}

/**
 * Which node runs the stop pass of one app's region in this pass (issue 8: two nodes never stop two
 * Machines of one region in one pass). The nodes hosting the region's Machines take turns, one pass each:
 * every node derives the same list from its catalog and the same pass number from the clock, since passes
 * run at the middle of wall-clock slots of the interval (tolerating clock skew up to half an interval).
 */
export function stopPassLeader(hosts: readonly string[], slot: number): string | undefined {
  if (hosts.length === 0) return undefined
  const sorted = [...new Set(hosts)].sort()
  return sorted[slot % sorted.length]
}
