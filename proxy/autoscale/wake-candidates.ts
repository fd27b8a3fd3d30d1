import type { RoutingHints } from '../routing/balancer.js'
import type { Closeness } from '../routing/closeness.js'
import { expandRegions } from '../routing/regions.js'
import type { RoutableMachine } from '../routing/routable-machine.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import type { ServiceRoute } from '../routing/service-route.js'

/**
 * How a Machine that takes no traffic now can come to take it:
 * - `arriving`: already asked to start (by the API, another edge, a crash restart) and not ready yet: join it;
 * - `reclaim`: being drained by autostop (cordoned, still running): starting it again cancels the stop;
 * - `resume`: suspended (FLY-SPEC §5: a few hundred ms at Fly, milliseconds here);
 * - `start`: stopped (a cold start);
 * - `late`: still stopping or suspending: it starts again once that finished.
 * Failed and destroyed Machines are never started for a request (FLY-SPEC PM06/PM07).
 */
export type WakeKind = 'arriving' | 'reclaim' | 'resume' | 'start' | 'late'

export interface WakeCandidate {
  readonly machine: RoutableMachine
  readonly kind: WakeKind
}

/** What the autostarter may use for a service: Machines on their way, then Machines to start, best first. */
export interface WakeSet {
  readonly arriving: WakeCandidate[]
  readonly startable: WakeCandidate[]
}

const PRIORITY: Record<WakeKind, number> = { arriving: 0, reclaim: 0, resume: 1, start: 2, late: 3 }

export function wakeKind(m: RoutableMachine): WakeKind | undefined {
  switch (m.state) {
    case 'failed':
    case 'destroying':
    case 'destroyed':
      return undefined
    case 'started':
      if (m.desired !== 'started') return 'late' // a stop or suspend is on its way
      if (m.cordoned) return 'reclaim'
      return m.ready ? undefined : 'arriving' // ready: eligible (or unhealthy), not ours to wake
    case 'suspended':
      return m.desired === 'started' ? 'arriving' : 'resume'
    case 'stopped':
    case 'created':
      return m.desired === 'started' ? 'arriving' : m.desired === 'destroyed' ? undefined : 'start'
    case 'starting':
      return m.desired === 'started' ? 'arriving' : 'late'
    case 'stopping':
    case 'suspending':
      return m.desired === 'started' ? 'arriving' : 'late'
  }
}

/**
 * The Machines of `service` that could take its traffic after a start, nearest region first (FLY-SPEC §5:
 * "choosing the nearest region that has one"), within a region the fastest to wake first. Routing hints
 * narrow and order the choice the way they do for running Machines (FLY-SPEC §3).
 */
export function wakeCandidates(index: RoutingIndex, closeness: Closeness, service: ServiceRoute, hints: RoutingHints | undefined): WakeSet {
  const app = index.app(service.app)
  const arriving: WakeCandidate[] = []
  const startable: Array<WakeCandidate & { rtt: number }> = []
  if (app === undefined) return { arriving, startable }
  const filter = new WakeFilter(service, hints)
  const preferred = filter.preferred
  for (const m of app.machines.values()) {
    if (!filter.allows(m)) continue
    if (index.isNodeDown(m.node)) continue
    const kind = wakeKind(m)
    if (kind === undefined) continue
    if (kind === 'arriving') arriving.push({ machine: m, kind })
    else startable.push({ machine: m, kind, rtt: closeness.rttTo(m.node, index.regionOfNode(m.node, m.region)) })
  }
  if (startable.length > 1) {
    // a region is as near as its nearest Machine; within it, the quickest to wake wins over a slightly nearer node
    const regionRtt = new Map<string, number>()
    for (const c of startable) regionRtt.set(c.machine.region, Math.min(c.rtt, regionRtt.get(c.machine.region) ?? Infinity))
    const rank = (region: string): number => {
      const i = preferred.indexOf(region)
      return i < 0 ? preferred.length : i
    }
    startable.sort((a, b) => rank(a.machine.region) - rank(b.machine.region)
      || regionRtt.get(a.machine.region)! - regionRtt.get(b.machine.region)!
      || (a.machine.region < b.machine.region ? -1 : a.machine.region > b.machine.region ? 1 : 0)
      || PRIORITY[a.kind] - PRIORITY[b.kind]
      || a.rtt - b.rtt
      || (a.machine.id < b.machine.id ? -1 : 1))
  }
  return { arriving, startable }
}

/** Which Machines may serve a request of `service` with these routing hints (FLY-SPEC §3), whatever their state. */
export class WakeFilter {
  /** Regions the hints name, in their order. */
  readonly preferred: string[] = []
  private readonly allowed: Set<string> | undefined

  constructor(private readonly service: ServiceRoute, private readonly hints: RoutingHints | undefined) {
    const regionList = hints?.forceRegions ?? hints?.preferRegions
    if (regionList !== undefined) {
      const { regions, any } = expandRegions(regionList)
      this.preferred = regions
      if (hints?.forceRegions !== undefined && !any) this.allowed = new Set(regions)
    }
  }

  allows(m: RoutableMachine): boolean {
    const hints = this.hints
    const processes = this.service.config.processes
    if (processes.length > 0 && !processes.includes(m.processGroup)) return false
    if (hints === undefined) return true
    if (hints.forceInstance !== undefined && m.id !== hints.forceInstance) return false
    if (hints.exclude?.has(m.id) === true) return false
    return this.allowed === undefined || this.allowed.has(m.region)
  }
}
