import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { CatalogReader, Subscription } from '../catalog/catalog-api.js'
import type { CatalogEvent } from '../schemas/catalog-events.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { createTlsFront } from './handlers/tls-front.js'
import { startH2Session } from './http/h2-session.js'
import { DEFAULT_HTTP_LIMITS, type HttpLimits } from './http/limits.js'
import type { UpstreamConn } from './http/upstream-conn.js'
import { UpstreamPool, type UpstreamPoolInit } from './http/upstream-pool.js'
import { accept, afterTls, type ConnectionDeps } from './lifecycle.js'
import { type Listener, ListenerSet } from './listeners.js'
import { FlycastListeners } from './flycast/flycast-listeners.js'
import { directConnector, type MachineConnector } from './machine-connector.js'
import { type AutoscaleInit, resolveAutoscaleOptions } from './autoscale/autoscale-options.js'
import { Autostarter, type AutostartStats } from './autoscale/autostarter.js'
import { Autostopper, type AutostopStats } from './autoscale/autostopper.js'
import type { MachineStarter, MachineStopper } from './autoscale/machine-control.js'
import { wakeRetryConnector } from './autoscale/wake-retry-connector.js'
import { ForwardedLoad } from './autoscale/forwarded-load.js'
import type { ClientInfo, CoarseClock, ListenerState, ProxyTimeouts, Session } from './proxy-context.js'
import { Balancer, type RoutingHints } from './routing/balancer.js'
import { Closeness, type ClosenessView } from './routing/closeness.js'
import { explainRoute, type RouteExplanation } from './routing/explain.js'
import { planPorts } from './routing/port-plan.js'
import { Router, type RouterInit } from './routing/router.js'
import { type IndexChanges, RoutingIndex } from './routing/routing-index.js'
import { newProxyStats, type ProxyStats } from './stats.js'
import { RequestMetrics } from './observe/request-metrics.js'
import { machineLoads } from './observe/machine-loads.js'
import type { LatencyHistogram } from './observe/latency-histogram.js'
import { CertStore } from './tls/cert-store.js'

/** Dev ports on one host (DESIGN §6): an app's port 80 listens on 8080 and 443 on 8443. */
export const DEV_PORT_MAP: Readonly<Record<number, number>> = { 80: 8080, 443: 8443 }

export interface ProxyServerInit {
  /** This edge's region: Fly-Region, request id suffix, and "closest" is measured from here. */
  region: string
  /** Address public listeners bind (default 127.0.0.1; only 127.0.0.0/8 in dev and tests). */
  publicAddr?: string
  /** Public port → port bound on this node; unmapped ports bind as themselves (production: identity). 0 = any free port. */
  portMap?: Readonly<Record<number, number>> | ((publicPort: number) => number)
  /** Apps answer on `<app>.<domain>` (default `localhost`). */
  domain?: string
  /** Server header on proxied responses (FLY-SPEC §7 has `Fly/<build>`). */
  serverHeader?: string
  limits?: Partial<HttpLimits>
  timeouts?: Partial<ProxyTimeouts>
  queue?: RouterInit
  pool?: UpstreamPoolInit
  connectTimeoutMs?: number
  /** How often timers are checked (timeouts are this coarse). Default: a fifth of the shortest timeout, ≤ 1 s. */
  sweepIntervalMs?: number
  /** An app's port → the port its Flycast listener binds (default: the same port, as Fly does; dev maps like portMap). */
  flycastPortMap?: Readonly<Record<number, number>> | ((publicPort: number) => number)
  /** Share of requests written to the request log, 0…1 (default 0.01); responses ≥ 500 are always logged. */
  requestLogSample?: number
  /** Autostart and autostop timings (proxy/autoscale/autoscale-options.ts). */
  autoscale?: AutoscaleInit
}

export interface ProxyServerComponents {
  catalog: Pick<CatalogReader, 'nodeName' | 'snapshot' | 'subscribe'>
  log: Logger
  /** RTT to other nodes, from gossip; the static region table fills in until then. */
  closeness?: ClosenessView
  /** How to reach a Machine; default: its private address on this host. The backhaul replaces it for remote nodes. */
  connector?: MachineConnector
  /** Autostart: asks a Machine's host to start it (a catalog write, injected by tools/). Without it nothing is started. */
  starter?: MachineStarter
  /** Autostop of the Machines this node hosts (cordon, stop, suspend). Without it nothing is stopped. */
  stopper?: MachineStopper
}

export interface ProxyServer {
  start(): Promise<void>
  /** Graceful: stop accepting, let work in flight finish up to timeouts.drainMs, then close everything. */
  stop(): Promise<void>
  readonly stats: ProxyStats
  readonly index: RoutingIndex
  /** The port bound for an app's public port (differs from the map when it maps to 0, as in tests). */
  boundPort(publicPort: number): number | undefined
  /** The port an app's service port is bound on at its Flycast address (undefined: not bound here). */
  flycastPort(app: string, publicPort: number): number | undefined
  /** Resolves once catalog event `seq` is in the routing index and listeners reflect it. */
  whenApplied(seq: number, timeoutMs?: number): Promise<void>
  /** The routing decision's inputs for a host on a public port (`edgeproxy route explain`). */
  explain(host: string, publicPort?: number, hints?: RoutingHints): RouteExplanation
  /** Autostart / autostop counters; undefined when that part is not wired. */
  readonly autoscale: { readonly autostart: AutostartStats | undefined; readonly autostop: AutostopStats | undefined; readonly wakeLatency: LatencyHistogram | undefined }
  /** Per-request counts and phase latencies (read by /metrics). */
  readonly requests: RequestMetrics
  /** Load per Machine and the capacity queue's depth, as this proxy counts them. */
  loads(): ReturnType<typeof machineLoads>
  /** The backhaul's worker side counts here the streams it opens to this node's Machines (autostop reads them). */
  readonly forwardedLoad: ForwardedLoad
  /** The backhaul's edge side: a node it cannot dial leaves routing until it answers again (issue 7). */
  setNodeReachable(node: string, reachable: boolean): void
}

const DEFAULT_TIMEOUTS: ProxyTimeouts = { headersMs: 10_000, idleMs: 60_000, handshakeMs: 10_000, drainMs: 10_000 }
const CLOSENESS_REFRESH_MS = 5000

export class DefaultProxyServer implements ProxyServer {
  readonly stats = newProxyStats()
  readonly requests: RequestMetrics
  readonly index: RoutingIndex
  private readonly closeness: Closeness
  private readonly balancer: Balancer
  private readonly router: Router
  private readonly autostarter: Autostarter | undefined
  private readonly autostopper: Autostopper | undefined
  readonly autoscale: ProxyServer['autoscale']
  readonly forwardedLoad = new ForwardedLoad()
  private readonly pool: UpstreamPool<UpstreamConn>
  private readonly certs: CertStore
  private readonly listeners: ListenerSet
  private readonly flycast: FlycastListeners
  private readonly sessions = new Set<Session>()
  private readonly clock: CoarseClock = { now: Date.now() }
  private readonly timeouts: ProxyTimeouts
  private readonly deps: ConnectionDeps
  private readonly log: Logger
  private subscription: Subscription | undefined
  private sweeper: NodeJS.Timeout | undefined
  private closenessOff: (() => void) | undefined
  private lastClosenessRefresh = 0
  private reconciled: Promise<void> = Promise.resolve()
  private reconcilePending = false
  private seqWaiters: Array<{ seq: number; resolve: () => void }> = []
  private started = false

  constructor(private readonly c: ProxyServerComponents, private readonly init: ProxyServerInit) {
    this.log = c.log
    this.requests = new RequestMetrics(c.log.child({ part: 'request-log' }), { sampleRate: init.requestLogSample ?? 0.01 })
    this.index = new RoutingIndex({ domain: init.domain })
    this.closeness = new Closeness(c.catalog.nodeName, init.region, c.closeness)
    this.balancer = new Balancer(this.index, this.closeness)
    const autoscale = resolveAutoscaleOptions(init.autoscale)
    this.autostarter = c.starter === undefined ? undefined : new Autostarter({
      index: this.index, closeness: this.closeness, starter: c.starter, log: c.log.child({ part: 'autostart' }), pump: (app) => this.pumpApp(app),
    }, autoscale)
    this.autostopper = c.stopper === undefined ? undefined : new Autostopper({
      index: this.index, stopper: c.stopper, starts: this.autostarter ?? { isStarting: () => false }, nodeName: c.catalog.nodeName,
      forwarded: this.forwardedLoad, log: c.log.child({ part: 'autostop' }),
    }, autoscale)
    this.autoscale = { autostart: this.autostarter?.stats, autostop: this.autostopper?.stats, wakeLatency: this.autostarter?.wakeLatency }
    this.router = new Router(this.balancer, this.stats, init.queue, this.autostarter)
    this.pool = new UpstreamPool<UpstreamConn>(init.pool)
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...init.timeouts }
    this.certs = new CertStore({ isKnownHost: (h) => this.index.appForHost(h) !== undefined, log: c.log })
    const portMap = init.portMap ?? {}
    const bindPortOf = typeof portMap === 'function' ? portMap : (p: number): number => portMap[p] ?? p
    this.listeners = new ListenerSet({
      host: init.publicAddr ?? '127.0.0.1',
      bindPortOf,
      onConnection: (socket: Socket, listener: Listener) => accept(socket, listener, this.deps),
      log: c.log,
    })
    const flycastMap = init.flycastPortMap ?? {}
    this.flycast = new FlycastListeners({
      bindPortOf: typeof flycastMap === 'function' ? flycastMap : (p: number): number => flycastMap[p] ?? p,
      onConnection: (socket: Socket, listener: Listener) => accept(socket, listener, this.deps),
      log: c.log.child({ part: 'flycast' }),
    })
    const deps: ConnectionDeps = {
      index: this.index,
      balancer: this.balancer,
      router: this.router,
      pool: this.pool,
      connector: this.withWakeRetry(c.connector ?? directConnector({ connectTimeoutMs: init.connectTimeoutMs })),
      stats: this.stats,
      requests: this.requests,
      log: c.log,
      region: init.region,
      serverHeader: init.serverHeader ?? 'Fly/edgeproxy',
      limits: { ...DEFAULT_HTTP_LIMITS, ...init.limits },
      timeouts: this.timeouts,
      clock: this.clock,
      // an https redirect points at the bound 443 (dev 8443), or at what 443 maps to when nothing listens there
      bindPortOf: (p: number) => (p === 443 ? this.listeners.get(443)?.boundPort ?? bindPortOf(443) : bindPortOf(p)),
      sessions: this.sessions,
      draining: false,
      tlsFront: (listener: ListenerState) => {
        listener.tls ??= createTlsFront(listener, {
          certs: this.certs, index: this.index, stats: this.stats, log: c.log, handshakeMs: this.timeouts.handshakeMs,
        }, (socket) => afterTls(socket, listener, deps))
        return listener.tls
      },
      startH2: (socket: TLSSocket, info: ClientInfo, listener: ListenerState) => startH2Session(socket, info, listener, deps),
    }
    this.deps = deps
  }

  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    await this.certs.start()
    const snapshot = this.c.catalog.snapshot()
    this.certs.load(snapshot.certs)
    this.afterChanges(this.index.load(snapshot))
    this.subscription = this.c.catalog.subscribe({ fromSeq: snapshot.seq + 1 }, (evt) => this.onEvent(evt))
    this.closenessOff = this.c.closeness?.onChange?.(() => this.closeness.invalidate())
    const t = this.timeouts
    const tick = this.init.sweepIntervalMs ?? Math.max(10, Math.min(1000, Math.floor(Math.min(t.headersMs, t.idleMs) / 5)))
    this.sweeper = setInterval(() => this.sweep(), tick)
    this.sweeper.unref()
    this.autostopper?.start()
    await this.reconciled
    this.log.info({ region: this.init.region, seq: this.index.lastSeq }, 'proxy started')
  }

  async stop(): Promise<void> {
    if (!this.started) return
    this.started = false
    this.deps.draining = true
    this.subscription?.close()
    this.subscription = undefined
    this.closenessOff?.()
    await this.listeners.close()
    await this.flycast.close()
    await this.autostopper?.stop() // drains in progress give up: their Machines take traffic again
    for (const s of this.sessions) s.drain()
    const deadline = Date.now() + this.timeouts.drainMs
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    if (this.sessions.size > 0) {
      this.log.warn({ open: this.sessions.size }, 'drain deadline reached; closing the rest')
      const err = new EdgeProxyError('EP_SHUTTING_DOWN', 'this node is shutting down; retry the request')
      for (const app of this.index.allApps()) for (const s of app.services) this.router.failAll(s, err)
      await new Promise((r) => setImmediate(r)) // let those 503s reach the socket before it is destroyed
      for (const s of [...this.sessions]) s.destroy()
      this.sessions.clear()
    }
    clearInterval(this.sweeper)
    this.sweeper = undefined
    this.pool.closeAll()
    this.autostarter?.stop()
    for (const w of this.seqWaiters) w.resolve()
    this.seqWaiters = []
    this.log.info({ stats: { requests: this.stats.requests, connections: this.stats.connectionsAccepted } }, 'proxy stopped')
  }

  flycastPort(app: string, publicPort: number): number | undefined {
    return this.flycast.boundPort(app, publicPort)
  }

  boundPort(publicPort: number): number | undefined {
    return this.listeners.get(publicPort)?.boundPort
  }

  loads(): ReturnType<typeof machineLoads> {
    return machineLoads(this.index)
  }

  explain(host: string, publicPort = 80, hints?: RoutingHints): RouteExplanation {
    return explainRoute(this.index, this.balancer, this.closeness, host, publicPort, hints)
  }

  setNodeReachable(node: string, reachable: boolean): void {
    this.afterChanges(this.index.setReachable(node, reachable))
  }

  async whenApplied(seq: number, timeoutMs = 10_000): Promise<void> {
    if (this.index.lastSeq < seq) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`routing index did not reach seq ${seq} within ${timeoutMs} ms (at ${this.index.lastSeq})`)), timeoutMs)
        this.seqWaiters.push({ seq, resolve: () => { clearTimeout(timer); resolve() } })
      })
    }
    await this.reconciled
  }

  private onEvent(evt: CatalogEvent): void {
    let changes: IndexChanges
    try {
      changes = this.index.apply(evt)
    } catch (err) {
      if (EdgeProxyError.is(err, 'EP_EVENT_GAP')) { this.resync(err); return }
      this.log.error({ err, seq: evt.seq, type: evt.type }, 'routing index could not apply a catalog event; resyncing')
      this.resync(err)
      return
    }
    this.certs.apply(evt)
    this.afterChanges(changes)
  }

  /** Waiters of an app look again (autostart gave up a start outside an index change). */
  private pumpApp(name: string): void {
    const app = this.index.app(name)
    if (app !== undefined) for (const s of app.services) this.router.pump(s)
  }

  /** Connection refusals of a Machine just woken are retried (FLY-SPEC §10), whichever connector reaches it. */
  private withWakeRetry(connector: MachineConnector): MachineConnector {
    return this.autostarter === undefined ? connector : wakeRetryConnector(connector, this.autostarter)
  }

  /** A gap (or a bug) in the event stream: rebuild from a snapshot and follow from there. */
  private resync(cause: unknown): void {
    this.log.warn({ err: cause }, 'routing index resync from a catalog snapshot')
    this.subscription?.close()
    const snapshot = this.c.catalog.snapshot()
    this.certs.load(snapshot.certs)
    this.afterChanges(this.index.load(snapshot))
    this.subscription = this.c.catalog.subscribe({ fromSeq: snapshot.seq + 1 }, (evt) => this.onEvent(evt))
  }

  private afterChanges(changes: IndexChanges): void {
    if (changes.ports) this.scheduleReconcile()
    for (const name of changes.apps) {
      this.autostarter?.appChanged(name) // a start that succeeded or failed decides what the pump does
      const app = this.index.app(name)
      if (app !== undefined) for (const s of app.services) this.router.pump(s)
    }
    if (changes.nodes) for (const app of this.index.allApps()) { this.autostarter?.appChanged(app.name); for (const s of app.services) this.router.pump(s) }
    if (this.seqWaiters.length > 0) {
      const seq = this.index.lastSeq
      const ready = this.seqWaiters.filter((w) => w.seq <= seq)
      this.seqWaiters = this.seqWaiters.filter((w) => w.seq > seq)
      for (const w of ready) w.resolve()
    }
  }

  /** Listener changes of one burst of events are applied together, after the burst. */
  private scheduleReconcile(): void {
    if (this.reconcilePending) return
    this.reconcilePending = true
    this.reconciled = new Promise<void>((resolve) => {
      queueMicrotask(() => {
        this.reconcilePending = false
        if (!this.started) { resolve(); return }
        Promise.all([this.listeners.reconcile(planPorts(this.index)), this.flycast.reconcile(this.index)]).then(() => resolve(), (err) => {
          this.log.error({ err }, 'listener reconcile failed')
          resolve()
        })
      })
    })
  }

  private sweep(): void {
    const now = Date.now()
    this.clock.now = now
    for (const s of this.sessions) s.sweep(now)
    this.pool.sweep(now)
    if (this.c.closeness?.onChange === undefined && now - this.lastClosenessRefresh >= CLOSENESS_REFRESH_MS) {
      // measurements change without telling: re-sort candidates now and then
      this.lastClosenessRefresh = now
      this.closeness.invalidate()
    }
  }
}
