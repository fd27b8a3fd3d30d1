import type { Logger } from 'pino'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { RoutableMachine } from '../routing/routable-machine.js'
import type { AppRoute, RoutingIndex } from '../routing/routing-index.js'
import type { AutoscaleOptions } from './autoscale-options.js'
import { groupPolicy, loadOf, planRegion, type StopDecision, type StopView, stopPassLeader } from './autostop-plan.js'
import type { MachineStopper } from './machine-control.js'

export interface AutostopStats {
  /** Stop passes run. */
  passes: number
  /** Machines cordoned for a stop. */
  cordoned: number
  stopped: number
  suspended: number
  /** Drains that hit drainMs with requests still in flight (the Machine was stopped anyway). */
  drainTimeouts: number
  /** Drains given up: a request started the Machine again, or the node is shutting down. */
  abandoned: number
}

export interface AutostopperComponents {
  index: RoutingIndex
  stopper: MachineStopper
  /** Starts on their way from this node: such a Machine is never stopped under the request waiting for it. */
  starts: { isStarting(machineId: string): boolean }
  /** This node: the pass stops only Machines it hosts, whose load its proxy counts completely. */
  nodeName: string
  /** Streams to this node's Machines opened for other edges (the backhaul's worker side). */
  forwarded: { of(machineId: string): number }
  log: Logger
}

const DRAIN_POLL_MS = 20

/**
 * Autostop (FLY-SPEC §5, issue 8): every interval, per app and region, the excess capacity is computed
 * from the load the proxy counts and soft_limit, and at most one Machine of the region is drained and
 * stopped (or suspended). Runs on every node that hosts Machines and acts only on them; the hosts of a
 * region take turns pass by pass (stopPassLeader), so one pass never stops two Machines of one region.
 */
export class Autostopper {
  readonly stats: AutostopStats = { passes: 0, cordoned: 0, stopped: 0, suspended: 0, drainTimeouts: 0, abandoned: 0 }
  private timer: NodeJS.Timeout | undefined
  private readonly drains = new Map<string, Promise<void>>()
  private stopping = false

  constructor(private readonly c: AutostopperComponents, private readonly options: AutoscaleOptions) {}

  start(): void {
    this.stopping = false
    this.schedule()
  }

  /** No new pass; drains in progress are given up (their Machines uncordoned) and awaited. */
  async stop(): Promise<void> {
    this.stopping = true
    clearTimeout(this.timer)
    this.timer = undefined
    await Promise.all(this.drains.values())
  }

  /** Passes run at the middle of each wall-clock slot of the interval, so that every node agrees on the slot. */
  private schedule(): void {
    if (this.stopping) return
    const i = this.options.autostopIntervalMs
    const now = Date.now()
    const at = (Math.floor((now - i / 2) / i) + 1) * i + i / 2
    this.timer = setTimeout(() => {
      try {
        this.pass(Math.floor(Date.now() / i))
      } catch (err) {
        this.c.log.error({ err }, 'autostop pass failed')
      }
      this.schedule()
    }, at - now)
    this.timer.unref()
  }

  /** One pass over every app with autostop on. */
  pass(slot: number): void {
    this.stats.passes++
    for (const app of this.c.index.allApps()) {
      if (app.record === undefined || !app.services.some((s) => s.config.auto_stop_machines !== 'off')) continue
      for (const d of this.plan(app, slot)) this.drainAndStop(d)
    }
  }

  private plan(app: AppRoute, slot: number): StopDecision[] {
    const self = this.c.nodeName
    const hostsByRegion = new Map<string, string[]>()
    const runningByRegion = new Map<string, StopView[]>()
    for (const m of app.machines.values()) {
      if (m.state === 'destroyed' || m.desired === 'destroyed') continue
      const hosts = hostsByRegion.get(m.region)
      if (hosts === undefined) hostsByRegion.set(m.region, [m.node])
      else hosts.push(m.node)
      if (!this.isRunning(m)) continue
      const local = m.node === self
      const { load, over } = loadOf(app.services, m.id, local ? this.c.forwarded.of(m.id) : 0)
      const view: StopView = { machine: m, load, over, local }
      const list = runningByRegion.get(m.region)
      if (list === undefined) runningByRegion.set(m.region, [view])
      else list.push(view)
    }
    const primary = app.record?.config.primary_region
    const policies = new Map<string, ReturnType<typeof groupPolicy>>()
    const policyOf = (group: string): ReturnType<typeof groupPolicy> => {
      if (!policies.has(group)) policies.set(group, groupPolicy(app.services, group))
      return policies.get(group)
    }
    const out: StopDecision[] = []
    for (const [region, running] of runningByRegion) {
      if (stopPassLeader(hostsByRegion.get(region) ?? [], slot) !== self) continue
      // without a primary_region the floor holds everywhere: keeping a Machine too many is the safe mistake
      const d = planRegion(running, primary === undefined || primary === region, policyOf)
      if (d !== undefined && !this.c.starts.isStarting(d.machine.id)) out.push(d)
    }
    return out
  }

  /** Counts as running for the formula: started, asked to stay so, not cordoned (a drain takes it out at once). */
  private isRunning(m: RoutableMachine): boolean {
    return m.state === 'started' && m.desired === 'started' && !m.cordoned && !this.drains.has(m.id) && !this.c.index.isNodeDown(m.node)
  }

  private drainAndStop(d: StopDecision): void {
    const id = d.machine.id
    const done = this.drain(d)
      .catch((err: unknown) => this.c.log.warn({ err, machine: id }, 'autostop failed'))
      .finally(() => this.drains.delete(id))
    this.drains.set(id, done)
  }

  /** FLY-SPEC §5 stop sequence: cordon, let in-flight requests finish (bounded), then stop or suspend. */
  private async drain(d: StopDecision): Promise<void> {
    const m = d.machine
    const log = this.c.log.child({ app: m.app, machine: m.id, region: m.region })
    log.info({ reason: d.reason, mode: d.mode }, 'autostop: draining a Machine')
    this.stats.cordoned++
    await this.c.stopper.cordon(m.id, d.reason)
    const services = (): AppRoute['services'] => this.c.index.app(m.app)?.services ?? []
    const inFlight = (): number => loadOf(services(), m.id, this.c.forwarded.of(m.id)).load
    const deadline = Date.now() + this.options.drainMs
    // the index shows the cordon once the write is applied; from then on no new request reaches the Machine
    while (!this.stopping && (!m.cordoned || inFlight() > 0) && Date.now() < deadline && !this.c.starts.isStarting(m.id)) {
      await new Promise((r) => setTimeout(r, DRAIN_POLL_MS))
    }
    const current = this.c.index.machines.get(m.id)
    if (this.stopping || current === undefined || !current.cordoned || current.desired !== 'started' || this.c.starts.isStarting(m.id)) {
      this.stats.abandoned++
      log.info({ shuttingDown: this.stopping }, 'autostop: drain given up')
      if (current !== undefined && current.cordoned && current.desired === 'started' && !this.c.starts.isStarting(m.id)) {
        await this.c.stopper.uncordon(m.id, 'autostop: cancelled').catch((err: unknown) => log.warn({ err: EdgeProxyError.from(err) }, 'autostop: uncordon failed'))
      }
      return
    }
    const left = inFlight()
    if (left > 0) {
      this.stats.drainTimeouts++
      log.warn({ inFlight: left, drainMs: this.options.drainMs }, 'autostop: requests still in flight after the drain time; stopping anyway')
    }
    await this.c.stopper.stop(m.id, d.mode, d.reason)
    if (d.mode === 'suspended') this.stats.suspended++
    else this.stats.stopped++
    log.info({ reason: d.reason, mode: d.mode }, 'autostop: Machine asked to stop')
  }
}
