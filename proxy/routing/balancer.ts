import { type Closeness } from './closeness.js'
import { expandRegions } from './regions.js'
import { ineligibleReason } from './routable-machine.js'
import type { RoutingIndex } from './routing-index.js'
import type { Candidate, CandidateSet, RegionGroup, ServiceRoute } from './service-route.js'

/** Client routing headers (FLY-SPEC §3), already split; instance rules apply before region rules. */
export interface RoutingHints {
  preferRegions?: readonly string[]
  forceRegions?: readonly string[]
  preferInstance?: string
  forceInstance?: string
  /** Machines that already failed this request (retry on another Machine). */
  exclude?: ReadonlySet<string>
}

/** `none`: no eligible Machine at all. `capacity`: eligible Machines exist but all are at hard_limit. */
export type PickResult = Candidate | 'none' | 'capacity'

/**
 * Picks a Machine for a service (FLY-SPEC §3): eligible Machines only; regions closest first; in a
 * region, under soft_limit first, then under hard_limit, never at hard_limit; least loaded, random
 * tie-break. The next region is tried only when every Machine of this one is at hard_limit.
 */
export class Balancer {
  constructor(
    private readonly index: RoutingIndex,
    private readonly closeness: Closeness,
    private readonly random: () => number = Math.random,
  ) {}

  pick(service: ServiceRoute, hints?: RoutingHints): PickResult {
    const set = this.candidates(service)
    if (hints !== undefined) return this.pickWithHints(service, set, hints)
    const regions = set.regions
    for (let i = 0; i < regions.length; i++) {
      const c = this.inRegion(regions[i], service, undefined)
      if (c !== undefined) return c
    }
    return set.total === 0 ? 'none' : 'capacity'
  }

  /** The eligible Machines of a service, cached until the app, the nodes or closeness change. */
  candidates(service: ServiceRoute): CandidateSet {
    const cached = service.candidates
    if (cached !== undefined && cached.appVersion === service.appRoute.version && cached.nodesVersion === this.index.nodesVersion
      && cached.closenessEpoch === this.closeness.epoch) return cached
    const set = this.build(service)
    service.candidates = set
    return set
  }

  private build(service: ServiceRoute): CandidateSet {
    const app = this.index.app(service.app)
    const byRegion = new Map<string, { rtt: number; candidates: Candidate[] }>()
    const byId = new Map<string, Candidate>()
    for (const m of app?.machines.values() ?? []) {
      if (ineligibleReason(m, service.config.processes, this.index.isNodeDown(m.node)) !== undefined) continue
      const candidate: Candidate = { machine: m, cell: service.cellFor(m.id) }
      byId.set(m.id, candidate)
      const rtt = this.closeness.rttTo(m.node, this.index.regionOfNode(m.node, m.region))
      const group = byRegion.get(m.region)
      if (group === undefined) byRegion.set(m.region, { rtt, candidates: [candidate] })
      else {
        group.candidates.push(candidate)
        if (rtt < group.rtt) group.rtt = rtt
      }
    }
    const regions: RegionGroup[] = [...byRegion].map(([region, g]) => ({ region, rtt: g.rtt, candidates: g.candidates }))
    regions.sort((a, b) => a.rtt - b.rtt || (a.region < b.region ? -1 : 1))
    return {
      appVersion: service.appRoute.version,
      nodesVersion: this.index.nodesVersion,
      closenessEpoch: this.closeness.epoch,
      regions,
      byId,
      total: byId.size,
    }
  }

  /** T0 (under soft) if the region has one, else T1 (under hard). */
  private inRegion(group: RegionGroup, service: ServiceRoute, exclude: ReadonlySet<string> | undefined): Candidate | undefined {
    return this.leastLoaded(group.candidates, service.softLimit, exclude) ?? this.leastLoaded(group.candidates, service.hardLimit, exclude)
  }

  private leastLoaded(candidates: Candidate[], limit: number, exclude: ReadonlySet<string> | undefined): Candidate | undefined {
    let best: Candidate | undefined
    let ties = 0
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[i]
      const n = c.cell.n
      if (n >= limit) continue
      if (exclude !== undefined && exclude.has(c.machine.id)) continue
      if (best === undefined || n < best.cell.n) { best = c; ties = 1 }
      else if (n === best.cell.n && this.random() * ++ties < 1) best = c // reservoir: each tie equally likely
    }
    return best
  }

  private pickWithHints(service: ServiceRoute, set: CandidateSet, hints: RoutingHints): PickResult {
    const exclude = hints.exclude
    const usable = (c: Candidate | undefined): c is Candidate =>
      c !== undefined && c.cell.n < service.hardLimit && (exclude === undefined || !exclude.has(c.machine.id))
    if (hints.forceInstance !== undefined) {
      const c = set.byId.get(hints.forceInstance)
      if (c === undefined || exclude?.has(c.machine.id) === true) return 'none'
      return usable(c) ? c : 'capacity'
    }
    if (hints.preferInstance !== undefined) {
      const c = set.byId.get(hints.preferInstance)
      if (usable(c)) return c
    }
    const regionList = hints.forceRegions ?? hints.preferRegions
    if (regionList !== undefined) {
      const { regions, any } = expandRegions(regionList)
      let seen = 0
      for (const region of regions) {
        const group = set.regions.find((g) => g.region === region)
        if (group === undefined) continue
        // Machines that already failed this request do not count: with only those left it is 'none', not a queue
        for (const cand of group.candidates) if (exclude === undefined || !exclude.has(cand.machine.id)) seen++
        const c = this.inRegion(group, service, exclude)
        if (c !== undefined) return c
      }
      if (hints.forceRegions !== undefined && !any) return seen === 0 ? 'none' : 'capacity'
    }
    let remaining = 0
    for (const group of set.regions) {
      const c = this.inRegion(group, service, exclude)
      if (c !== undefined) return c
      for (const cand of group.candidates) if (exclude === undefined || !exclude.has(cand.machine.id)) remaining++
    }
    return remaining === 0 ? 'none' : 'capacity'
  }
}
