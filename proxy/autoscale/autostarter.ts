import { LatencyHistogram } from '../observe/latency-histogram.js'
import type { Logger } from 'pino'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { RoutingHints } from '../routing/balancer.js'
import type { Closeness } from '../routing/closeness.js'
import { ineligibleReason, type RoutableMachine } from '../routing/routable-machine.js'
import type { RouteWaiter, RouteWake } from '../routing/router.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import type { ServiceRoute } from '../routing/service-route.js'
import type { AutoscaleOptions } from './autoscale-options.js'
import type { MachineStarter } from './machine-control.js'
import { type WakeCandidate, WakeFilter, type WakeSet, wakeCandidates } from './wake-candidates.js'

export interface AutostartStats {
  /** Machines asked to start or resume for a request. */
  starts: number
  /** Starts that ended with the Machine ready. */
  woke: number
  /** Starts that failed, were undone or did not become ready within the wake timeout. */
  startFailures: number
  /** Connection refusals retried during a wake window (wake-retry-connector.ts). */
  wakeRetries: number
}

export interface AutostarterComponents {
  index: RoutingIndex
  closeness: Closeness
  starter: MachineStarter
  log: Logger
  /** Lets the waiters of an app look again (a start failed or was given up outside an index change). */
  pump(app: string): void
}

/** A start this node asked for (or joined), until the Machine is ready or the start is given up. */
interface PendingStart {
  readonly machine: RoutableMachine
  readonly since: number
  /** The index has shown the Machine asked to start (desired started), so a later other desire undoes it. */
  seenStarting: boolean
}

/** After a failed start the Machine is not asked again for this long (no loop of refused requests). */
const RETRY_FAILED_AFTER_MS = 5000
const SWEEP_MS = 250

/**
 * Autostart (FLY-SPEC §5, issue 8). The Router calls it when no Machine of the nearest region is under
 * soft_limit: held requests get enough Machines started for them (one per hard_limit of waiting requests,
 * single-flight: requests join starts on their way), and a busy region gets one more Machine for what
 * follows. A start is a catalog write through the injected MachineStarter; the Machine counts as up only
 * when the routing index says it is eligible — started, ready (first passing check), not cordoned, on a
 * node that is up — wherever it runs. Nothing here awaits on the request path.
 */
export class Autostarter implements RouteWake {
  readonly stats: AutostartStats = { starts: 0, woke: 0, startFailures: 0, wakeRetries: 0 }
  /** From asking for a start to the Machine ready, in seconds (/metrics). */
  readonly wakeLatency = new LatencyHistogram()
  readonly wakeTimeoutMs: number
  private readonly pendingByApp = new Map<string, Map<string, PendingStart>>()
  /** Machine id → until when a connection refusal is retried (its wake window). */
  private readonly woken = new Map<string, number>()
  private readonly failures = new Map<string, { at: number; error: EdgeProxyError }>()
  private readonly failedMachines = new Map<string, number>()
  private readonly cache = new WeakMap<ServiceRoute, { app: number; nodes: number; closeness: number; set: WakeSet }>()
  private sweeper: NodeJS.Timeout | undefined

  constructor(private readonly c: AutostarterComponents, private readonly options: AutoscaleOptions) {
    this.wakeTimeoutMs = options.wakeTimeoutMs
  }

  stop(): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
  }

  // ---- RouteWake ----

  busy(service: ServiceRoute, hints: RoutingHints | undefined, waiter: RouteWaiter): void {
    if (!service.config.auto_start_machines || hints?.forceInstance !== undefined) return
    if (this.pendingFor(service, undefined) > 0) return // single flight: one more Machine at a time
    const set = this.candidates(service, hints)
    if (set.arriving.length > 0) return
    const next = this.firstStartable(set)
    if (next !== undefined) this.ask(service, next, waiter)
  }

  cover(service: ServiceRoute, hints: RoutingHints | undefined, waiting: number, waiter: RouteWaiter | undefined): boolean | EdgeProxyError {
    if (!service.config.auto_start_machines) return false
    // one Machine takes up to hard_limit of the held requests (FLY-SPEC §3 T2); unlimited: one is enough
    const need = Number.isFinite(service.hardLimit) ? Math.max(1, Math.ceil(waiting / service.hardLimit)) : 1
    const set = this.candidates(service, hints)
    const pending = this.pendingByApp.get(service.app)
    let have = this.pendingFor(service, hints)
    for (const c of set.arriving) {
      if (pending?.has(c.machine.id) === true) continue
      this.track(c.machine, true) // someone else's start: join it (and give it a wake window)
      have++
    }
    while (have < need) {
      const next = this.firstStartable(set)
      if (next === undefined) break
      this.ask(service, next, waiter)
      have++
    }
    if (have > 0) return true
    const failure = this.failures.get(service.app)
    if (failure !== undefined && Date.now() - failure.at < this.options.wakeTimeoutMs) return failure.error
    return false
  }

  timedOut(service: ServiceRoute): EdgeProxyError {
    const ids = [...(this.pendingByApp.get(service.app)?.keys() ?? [])]
    const ms = this.options.wakeTimeoutMs
    if (ids.length === 0) {
      return new EdgeProxyError('EP_AUTOSTART_TIMEOUT', `app "${service.app}": no Machine started for this request became ready within ${ms} ms; see \`edgeproxy machines ls --app ${service.app}\``)
    }
    return new EdgeProxyError('EP_AUTOSTART_TIMEOUT', `app "${service.app}": Machine ${ids.join(', ')} was started for this request but did not become ready (first passing check) within ${ms} ms; see \`edgeproxy machines logs ${ids[0]}\``)
  }

  // ---- the wake window (wake-retry-connector.ts) ----

  /** Whether a refused connection to this Machine is worth retrying: it was woken moments ago. */
  inWakeWindow(machineId: string): boolean {
    const until = this.woken.get(machineId)
    if (until === undefined) return false
    if (Date.now() <= until) return true
    this.woken.delete(machineId)
    return false
  }

  /** Whether a start of this Machine is on its way from here (autostop must not stop it under a request). */
  isStarting(machineId: string): boolean {
    for (const pending of this.pendingByApp.values()) if (pending.has(machineId)) return true
    return false
  }

  // ---- following the index ----

  /** The routing index changed for `app`: settle the starts it decides (before the app's queues are pumped). */
  appChanged(app: string): void {
    const pending = this.pendingByApp.get(app)
    if (pending === undefined) return
    const machines = this.c.index.app(app)?.machines
    for (const [id, p] of pending) {
      const m = machines?.get(id)
      if (m === undefined) { this.giveUp(app, id, `Machine ${id} was removed while starting`); continue }
      if (ineligibleReason(m, [], this.c.index.isNodeDown(m.node)) === undefined) { this.woke(app, p); continue }
      if (m.state === 'failed' || m.state === 'destroying' || m.state === 'destroyed') {
        this.giveUp(app, id, `Machine ${id} ${m.state === 'failed' ? 'failed to start' : 'was destroyed'}; see \`edgeproxy machines logs ${id}\``)
        continue
      }
      if (this.c.index.isNodeDown(m.node)) { this.giveUp(app, id, `the node ${m.node} hosting Machine ${id} is down`); continue }
      if (m.desired === 'started') p.seenStarting = true
      else if (p.seenStarting) this.giveUp(app, id, `Machine ${id} was asked to be ${m.desired} while starting (${m.state})`)
      else if (m.state === 'started' && m.ready && m.critical) this.giveUp(app, id, `Machine ${id} started but a health check is critical`)
    }
  }

  // ---- internals ----

  private candidates(service: ServiceRoute, hints: RoutingHints | undefined): WakeSet {
    if (hints !== undefined) return wakeCandidates(this.c.index, this.c.closeness, service, hints)
    const cached = this.cache.get(service)
    const app = service.appRoute.version
    const nodes = this.c.index.nodesVersion
    const closeness = this.c.closeness.epoch
    if (cached !== undefined && cached.app === app && cached.nodes === nodes && cached.closeness === closeness) return cached.set
    const set = wakeCandidates(this.c.index, this.c.closeness, service, undefined)
    this.cache.set(service, { app, nodes, closeness, set })
    return set
  }

  /** The best Machine not already starting from here nor failed moments ago. */
  private firstStartable(set: WakeSet): WakeCandidate | undefined {
    const now = Date.now()
    for (const c of set.startable) {
      const id = c.machine.id
      if (this.isPendingMachine(c.machine)) continue
      const failedAt = this.failedMachines.get(id)
      if (failedAt !== undefined) {
        if (now - failedAt < RETRY_FAILED_AFTER_MS) continue
        this.failedMachines.delete(id)
      }
      return c
    }
    return undefined
  }

  private isPendingMachine(m: RoutableMachine): boolean {
    return this.pendingByApp.get(m.app)?.has(m.id) === true
  }

  private pendingFor(service: ServiceRoute, hints: RoutingHints | undefined): number {
    const pending = this.pendingByApp.get(service.app)
    if (pending === undefined) return 0
    const filter = new WakeFilter(service, hints)
    let n = 0
    for (const p of pending.values()) if (filter.allows(p.machine)) n++
    return n
  }

  private ask(service: ServiceRoute, c: WakeCandidate, waiter: RouteWaiter | undefined): void {
    const m = c.machine
    const reqId = waiter?.requestId ?? 'unknown'
    this.track(m, false)
    this.stats.starts++
    this.c.log.info({ app: m.app, machine: m.id, region: m.region, node: m.node, kind: c.kind, reqId, service: service.index }, 'autostart: starting a Machine for a request')
    this.c.starter.start(m.id, `autostart: request ${reqId}`).catch((err: unknown) => {
      const e = EdgeProxyError.from(err)
      this.giveUp(m.app, m.id, `could not ask for Machine ${m.id} to start: ${e.code}: ${e.message}`)
    })
  }

  private track(m: RoutableMachine, seenStarting: boolean): void {
    let pending = this.pendingByApp.get(m.app)
    if (pending === undefined) {
      pending = new Map()
      this.pendingByApp.set(m.app, pending)
    }
    pending.set(m.id, { machine: m, since: Date.now(), seenStarting })
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS)
      this.sweeper.unref()
    }
  }

  private untrack(app: string, id: string): boolean {
    const pending = this.pendingByApp.get(app)
    if (pending === undefined || !pending.delete(id)) return false
    if (pending.size === 0) this.pendingByApp.delete(app)
    return true
  }

  private woke(app: string, p: PendingStart): void {
    this.untrack(app, p.machine.id)
    this.stats.woke++
    this.wakeLatency.observe((Date.now() - p.since) / 1000)
    this.woken.set(p.machine.id, Date.now() + this.options.wakeRetryWindowMs)
    this.c.log.info({ app, machine: p.machine.id, ms: Date.now() - p.since }, 'autostart: Machine ready')
  }

  private giveUp(app: string, id: string, why: string): void {
    if (!this.untrack(app, id)) return
    this.stats.startFailures++
    this.failedMachines.set(id, Date.now())
    const error = new EdgeProxyError('EP_AUTOSTART_FAILED', `app "${app}": ${why}`)
    this.failures.set(app, { at: Date.now(), error })
    this.c.log.warn({ app, machine: id, reason: why }, 'autostart: start given up')
    this.c.pump(app)
  }

  /** Starts that outlived the wake timeout are given up; old wake windows and failures are forgotten. */
  private sweep(): void {
    const now = Date.now()
    for (const [app, pending] of [...this.pendingByApp]) {
      for (const [id, p] of [...pending]) {
        if (now - p.since >= this.options.wakeTimeoutMs) this.giveUp(app, id, `Machine ${id} did not become ready within ${this.options.wakeTimeoutMs} ms; see \`edgeproxy machines logs ${id}\``)
      }
    }
    for (const [id, until] of this.woken) if (now > until) this.woken.delete(id)
    for (const [app, f] of this.failures) if (now - f.at >= this.options.wakeTimeoutMs) this.failures.delete(app)
    for (const [id, at] of this.failedMachines) if (now - at >= RETRY_FAILED_AFTER_MS) this.failedMachines.delete(id)
    if (this.pendingByApp.size === 0 && this.woken.size === 0 && this.failures.size === 0 && this.failedMachines.size === 0) this.stop()
  }
}
