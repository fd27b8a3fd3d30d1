import { EdgeProxyError } from '../../schemas/errors.js'
import type { Balancer, RoutingHints } from './balancer.js'
import type { Candidate, CapacityWaiters, LoadCell, ServiceRoute } from './service-route.js'
import type { ProxyStats } from '../stats.js'

/** A request or connection waiting for a Machine; `routed` is called exactly once. */
export interface RouteWaiter {
  routed(result: Candidate | EdgeProxyError): void
  /** The request id, for the reason of a start made for it (`autostart: request <id>`). */
  readonly requestId?: string
}

/**
 * Autostart's side of the route phase (proxy/autoscale/autostarter.ts, FLY-SPEC §5). The Router asks it
 * only when no Machine of the nearest region is under soft_limit; it never blocks and never throws.
 */
export interface RouteWake {
  /** How long a request held for a starting Machine may wait. */
  readonly wakeTimeoutMs: number
  /** A request was placed on a Machine at or past soft_limit, or outside the nearest region: start one more, unless one is on its way. */
  busy(service: ServiceRoute, hints: RoutingHints | undefined, waiter: RouteWaiter): void
  /**
   * `waiting` requests of the service (this one included) found no Machine with room: makes sure enough
   * Machines are starting for them. true: wait for them; an error: starting failed; false: nothing to start.
   */
  cover(service: ServiceRoute, hints: RoutingHints | undefined, waiting: number, waiter: RouteWaiter | undefined): boolean | EdgeProxyError
  /** The answer for a request whose wait for a starting Machine ran out. */
  timedOut(service: ServiceRoute): EdgeProxyError
}

export interface RouterInit {
  /** How long a request may wait for a Machine under hard_limit (FLY-SPEC §3 step 6: default 10 s). */
  queueTimeoutMs?: number
  /** Waiters per service beyond which new ones get 503 at once. */
  queueLimit?: number
}

/**
 * The route phase's decision with its waiting room (FLY-SPEC §3): pick a Machine now and lease one unit
 * of its load, or queue FIFO until a lease is released or the index changes, or fail. Sync whenever it
 * can be: a returned Candidate is already leased; `undefined` means queued and `routed` comes later.
 * Autostart (a later issue) slots in here: a waiter may also wait for a Machine to wake.
 */
export class Router {
  readonly queueTimeoutMs: number
  readonly queueLimit: number

  constructor(
    private readonly balancer: Balancer,
    private readonly stats: ProxyStats,
    init: RouterInit = {},
    /** Autostart; without it a request that finds no Machine fails or queues as before. */
    private readonly wake?: RouteWake,
  ) {
    this.queueTimeoutMs = init.queueTimeoutMs ?? 10_000
    this.queueLimit = init.queueLimit ?? 1024
  }

  route(service: ServiceRoute, hints: RoutingHints | undefined, waiter: RouteWaiter): Candidate | EdgeProxyError | undefined {
    const queue = service.waiters
    // FIFO: waiters get freed capacity before a newcomer does
    if (queue !== undefined && queue.length > 0) queue.pump()
    const r = this.balancer.pick(service, hints)
    if (typeof r === 'object') {
      // FLY-SPEC §3 step 5: no Machine of the nearest region under soft_limit → autostart one for what comes next
      if (this.wake !== undefined && (r.cell.n >= service.softLimit || r.machine.region !== service.candidates?.regions[0]?.region)) this.wake.busy(service, hints, waiter)
      r.cell.n++
      return r
    }
    const waking = this.wake?.cover(service, hints, (queue?.length ?? 0) + 1, waiter) ?? false
    if (r === 'none' && waking !== true) return waking === false ? noMachine(service, hints) : waking
    return this.enqueue(service, hints, waiter, waking === true)
  }

  /** Ends one lease; a waiter of the service may now fit. */
  release(cell: LoadCell): void {
    cell.n--
    const waiters = cell.owner.waiters
    if (waiters !== undefined && waiters.length > 0) waiters.pump()
  }

  /** The waiter's client went away; it will not be called. */
  cancel(service: ServiceRoute, waiter: RouteWaiter): void {
    (service.waiters as CapacityQueue | undefined)?.remove(waiter)
  }

  /** Eligibility changed for these services (index events): waiters may fit or have no Machine left. */
  pump(service: ServiceRoute): void {
    const waiters = service.waiters
    if (waiters !== undefined && waiters.length > 0) waiters.pump()
  }

  waiting(service: ServiceRoute): number { return service.waiters?.length ?? 0 }

  private enqueue(service: ServiceRoute, hints: RoutingHints | undefined, waiter: RouteWaiter, waking: boolean): EdgeProxyError | undefined {
    let queue = service.waiters as CapacityQueue | undefined
    if (queue === undefined) {
      queue = new CapacityQueue(service, this.balancer, this.stats, this.queueTimeoutMs, this.wake)
      service.waiters = queue
    }
    if (queue.length >= this.queueLimit) {
      this.stats.queueRejected++
      return new EdgeProxyError('EP_CAPACITY', `every Machine of app "${service.app}" is at its hard_limit and ${queue.length} requests are already waiting; add Machines or raise hard_limit`)
    }
    queue.add(hints, waiter, waking)
    return undefined
  }

  /** Fails every waiter (shutdown). */
  failAll(service: ServiceRoute, err: EdgeProxyError): void {
    (service.waiters as CapacityQueue | undefined)?.failAll(err)
  }
}

function noMachine(service: ServiceRoute, hints: RoutingHints | undefined): EdgeProxyError {
  const next = `see \`edgeproxy catalog machines --app ${service.app}\``
  if (hints?.forceInstance !== undefined) {
    return new EdgeProxyError('EP_NO_HEALTHY_MACHINE', `Machine ${hints.forceInstance} of app "${service.app}" (fly-force-instance-id) is not started and healthy; ${next}`)
  }
  if (hints?.forceRegions !== undefined) {
    return new EdgeProxyError('EP_NO_HEALTHY_MACHINE', `app "${service.app}" has no started, healthy Machine in ${hints.forceRegions.join(',')} (fly-force-region); ${next}`)
  }
  return new EdgeProxyError('EP_NO_HEALTHY_MACHINE', `app "${service.app}" has no started, healthy Machine; ${next}`)
}

interface Entry {
  readonly hints: RoutingHints | undefined
  readonly waiter: RouteWaiter
  readonly timer: NodeJS.Timeout
  /** Held for a starting Machine: waits up to the wake timeout and times out with EP_AUTOSTART_TIMEOUT. */
  readonly waking: boolean
}

/** FIFO of waiters for one service, each with its own deadline. */
class CapacityQueue implements CapacityWaiters {
  private entries: Entry[] = []
  private pumping = false

  constructor(
    private readonly service: ServiceRoute,
    private readonly balancer: Balancer,
    private readonly stats: ProxyStats,
    private readonly timeoutMs: number,
    private readonly wake: RouteWake | undefined,
  ) {}

  get length(): number { return this.entries.length }

  add(hints: RoutingHints | undefined, waiter: RouteWaiter, waking: boolean): void {
    this.stats.queued++
    const timer = setTimeout(() => this.expire(waiter), waking && this.wake !== undefined ? this.wake.wakeTimeoutMs : this.timeoutMs)
    this.entries.push({ hints, waiter, timer, waking })
  }

  remove(waiter: RouteWaiter): void {
    const i = this.entries.findIndex((e) => e.waiter === waiter)
    if (i < 0) return
    clearTimeout(this.entries[i].timer)
    this.entries.splice(i, 1)
  }

  pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      for (let i = 0; i < this.entries.length;) {
        const e = this.entries[i]
        // the waiters ahead still count: the service's own waiters do not block its head
        const r = this.balancer.pick(this.service, e.hints)
        if (typeof r !== 'object') {
          // a start may be on its way (or needed now: one failed, the queue grew)
          const waking = this.wake?.cover(this.service, e.hints, this.entries.length - i, undefined) ?? false
          if (r === 'capacity' || waking === true) {
            if (e.hints === undefined) break // nothing behind a plain waiter fits either
            i++
            continue
          }
          this.entries.splice(i, 1)
          clearTimeout(e.timer)
          e.waiter.routed(waking === false ? noMachine(this.service, e.hints) : waking)
          continue
        }
        this.entries.splice(i, 1)
        clearTimeout(e.timer)
        r.cell.n++
        e.waiter.routed(r)
      }
    } finally {
      this.pumping = false
    }
  }

  failAll(err: EdgeProxyError): void {
    const entries = this.entries
    this.entries = []
    for (const e of entries) { clearTimeout(e.timer); e.waiter.routed(err) }
  }

  private expire(waiter: RouteWaiter): void {
    const i = this.entries.findIndex((e) => e.waiter === waiter)
    if (i < 0) return
    const [entry] = this.entries.splice(i, 1)
    this.stats.queueTimeouts++
    if (entry.waking && this.wake !== undefined) { waiter.routed(this.wake.timedOut(this.service)); return }
    const hard = this.service.hardLimit
    waiter.routed(new EdgeProxyError('EP_CAPACITY', `every Machine of app "${this.service.app}" stayed at its hard_limit (${hard}) for ${this.timeoutMs} ms; add Machines or raise [services.concurrency] hard_limit`))
  }
}
