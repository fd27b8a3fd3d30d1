import type { CatalogSnapshot } from '../../catalog/catalog-api.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { AppRecord, MachineRecord, NodeRecord } from '../../schemas/catalog-records.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { compileResponseEdits } from '../http/response-edits.js'
import { hasCritical, type RoutableMachine, toRoutable } from './routable-machine.js'
import { type PortRoute, ServiceRoute } from './service-route.js'

/** An app as routing sees it: config, ports, Machines. Machines may arrive before their app. */
export interface AppRoute {
  readonly name: string
  record: AppRecord | undefined
  services: ServiceRoute[]
  ports: Map<number, PortRoute>
  machines: Map<string, RoutableMachine>
  /** Bumped whenever eligibility of any of its Machines may have changed. */
  version: number
}

export interface NodeState {
  region: string
  down: boolean
  left: boolean
  /** This edge's backhaul could not reach it (issue 7): out of routing before gossip times it out. Optional: not from the catalog. */
  unreachable?: boolean
}

export interface RoutingIndexInit {
  /** Apps answer on `<app>.<domain>` (DESIGN §6: default `localhost`). */
  domain?: string
}

/** What changed in one apply(): the proxy reconciles listeners and pumps queues from it. */
export interface IndexChanges {
  apps: Set<string>
  ports: boolean
  nodes: boolean
}

/**
 * In-memory routing state, built event by event from the catalog (DESIGN §4). Sync and deterministic: the
 * same events in the same order give the same index. The request path only calls the lookups at the bottom.
 */
export class RoutingIndex {
  readonly domain: string
  private readonly apps = new Map<string, AppRoute>()
  private readonly hosts = new Map<string, string>()
  /** `*.example.com` is stored under `example.com`. */
  private readonly wildcardHosts = new Map<string, string>()
  private readonly hostsOfApp = new Map<string, string[]>()
  readonly machines = new Map<string, RoutableMachine>()
  readonly nodes = new Map<string, NodeState>()
  /** Bumped on any change; per-connection caches compare it. */
  version = 0
  /** Bumped when node reachability or regions change (every candidate set may be stale). */
  nodesVersion = 0
  portsVersion = 0
  private seq = 0
  private changes: IndexChanges = { apps: new Set(), ports: false, nodes: false }

  constructor(init: RoutingIndexInit = {}) {
    this.domain = (init.domain ?? 'localhost').toLowerCase()
  }

  get lastSeq(): number { return this.seq }

  /** Starts from a snapshot (cheaper than replaying the whole log, which may be truncated). */
  load(snapshot: CatalogSnapshot): IndexChanges {
    for (const app of [...this.apps.keys()]) this.dropApp(app)
    this.machines.clear()
    this.nodes.clear()
    for (const node of snapshot.nodes) this.upsertNode(node)
    for (const app of snapshot.apps) this.upsertApp(app)
    for (const m of snapshot.machines) this.upsertMachine(m)
    this.seq = snapshot.seq
    this.changes.nodes = true
    return this.takeChanges()
  }

  /** Applies one event; throws EP_EVENT_GAP when it does not follow the last one. */
  apply(evt: CatalogEvent): IndexChanges {
    if (evt.seq <= this.seq) return this.takeChanges() // replayed twice: already in the index
    if (evt.seq !== this.seq + 1) throw new EdgeProxyError('EP_EVENT_GAP', `routing index expected event ${this.seq + 1}, got ${evt.seq}`)
    switch (evt.type) {
      case 'app.upserted': this.upsertApp(evt.app); break
      case 'app.removed': this.dropApp(evt.app); break
      case 'machine.upserted': this.upsertMachine(evt.machine); break
      case 'machine.removed': this.removeMachine(evt.app, evt.machineId); break
      case 'machine.state': this.updateMachine(evt.app, evt.machineId, (m) => {
        m.state = evt.state
        if (evt.privateAddr !== undefined) m.privateAddr = evt.privateAddr
      }); break
      case 'health.changed': this.updateMachine(evt.app, evt.machineId, (m) => {
        m.critical = hasCritical(evt.checks)
        m.ready = evt.ready
      }); break
      case 'node.joined':
      case 'node.updated': this.upsertNode(evt.node); break
      case 'node.left': this.setNode(evt.node, (n) => { n.left = true }); break
      case 'node.down': this.setNode(evt.node, (n) => { n.down = true }); break
      case 'node.up': this.setNode(evt.node, (n) => { n.down = false; n.left = false }); break
      default: break // cert.* feed the certificate store; catalog.quarantined changes nothing here
    }
    this.seq = evt.seq
    this.version++
    return this.takeChanges()
  }

  // ---- lookups (request path: Map gets only) ----

  /** `host` lower-case, without port. Exact names first, then a wildcard one label up. */
  appForHost(host: string): AppRoute | undefined {
    let name = this.hosts.get(host)
    if (name === undefined) {
      const dot = host.indexOf('.')
      if (dot > 0) name = this.wildcardHosts.get(host.slice(dot + 1))
    }
    return name === undefined ? undefined : this.apps.get(name)
  }

  app(name: string): AppRoute | undefined { return this.apps.get(name) }

  allApps(): IterableIterator<AppRoute> { return this.apps.values() }

  /**
   * Down, left, unreachable — or not known here yet: the documents of a catalog arrive independently, so an
   * app's Machine can be seen before its node's record (region, backhaul address), and routing to it then
   * failed with "publishes no backhaul address". It takes traffic once that record arrives.
   */
  isNodeDown(node: string): boolean {
    const n = this.nodes.get(node)
    return n === undefined || n.down || n.left || n.unreachable === true
  }

  /**
   * The backhaul's own view of a node (issue 7): a node it cannot dial leaves routing at once, so a retry
   * goes to another node rather than to a sibling Machine on the dead one; it returns when it answers again.
   */
  setReachable(node: string, reachable: boolean): IndexChanges {
    const n = this.nodes.get(node)
    if (n !== undefined && (n.unreachable === true) !== !reachable) {
      n.unreachable = !reachable
      this.version++
      this.nodesChanged()
    }
    return this.takeChanges()
  }

  regionOfNode(node: string, fallback: string): string {
    const region = this.nodes.get(node)?.region
    return region === undefined || region === '' ? fallback : region
  }

  /** Every public hostname, for `route explain` and tests. */
  hostnames(): Map<string, string> { return new Map(this.hosts) }

  // ---- event handling ----

  private takeChanges(): IndexChanges {
    const out = this.changes
    this.changes = { apps: new Set(), ports: false, nodes: false }
    return out
  }

  private appRoute(name: string): AppRoute {
    let app = this.apps.get(name)
    if (app === undefined) {
      app = { name, record: undefined, services: [], ports: new Map(), machines: new Map(), version: 0 }
      this.apps.set(name, app)
    }
    return app
  }

  private touch(app: AppRoute): void {
    app.version++
    this.changes.apps.add(app.name)
  }

  private upsertApp(record: AppRecord): void {
    const app = this.appRoute(record.name)
    const previous = app.services
    app.record = record
    app.services = record.config.services.map((s, i) => new ServiceRoute(app, record.name, i, s, previous[i]))
    // leases and waiters of services that no longer exist still point at the old objects: they drain there
    const ports = new Map<number, PortRoute>()
    for (const service of app.services) {
      if (service.config.protocol !== 'tcp') continue // udp is not proxied (FLY-SPEC §2: the app binds it itself)
      for (const port of service.config.ports) {
        const edits = compileResponseEdits(port)
        for (let p = port.start_port; p <= port.end_port; p++) {
          if (!ports.has(p)) ports.set(p, { publicPort: p, service, port, edits })
        }
      }
    }
    app.ports = ports
    this.replaceHosts(record.name, [`${record.name}.${this.domain}`, ...record.hostnames])
    this.touch(app)
    this.changes.ports = true
    this.portsVersion++
  }

  private dropApp(name: string): void {
    const app = this.apps.get(name)
    if (app === undefined) return
    for (const id of app.machines.keys()) this.machines.delete(id)
    this.replaceHosts(name, [])
    this.apps.delete(name)
    app.version++
    this.changes.apps.add(name)
    this.changes.ports = true
    this.portsVersion++
  }

  /** A hostname belongs to the first app that claims it; a later claim waits until it is released. */
  private replaceHosts(app: string, wanted: string[]): void {
    for (const host of this.hostsOfApp.get(app) ?? []) {
      const map = host.startsWith('*.') ? this.wildcardHosts : this.hosts
      const key = host.startsWith('*.') ? host.slice(2) : host
      if (map.get(key) === app) map.delete(key)
    }
    const lower = wanted.map((h) => h.toLowerCase())
    this.hostsOfApp.set(app, lower)
    if (wanted.length === 0) this.hostsOfApp.delete(app)
    for (const host of lower) {
      const map = host.startsWith('*.') ? this.wildcardHosts : this.hosts
      const key = host.startsWith('*.') ? host.slice(2) : host
      if (!map.has(key)) map.set(key, app)
    }
    // names released above may be wanted by another app
    for (const [other, hosts] of this.hostsOfApp) {
      if (other === app) continue
      for (const host of hosts) {
        const map = host.startsWith('*.') ? this.wildcardHosts : this.hosts
        const key = host.startsWith('*.') ? host.slice(2) : host
        if (!map.has(key)) map.set(key, other)
      }
    }
  }

  private upsertMachine(record: MachineRecord): void {
    const app = this.appRoute(record.app)
    const existing = app.machines.get(record.id)
    const next = toRoutable(record)
    if (existing === undefined) {
      app.machines.set(record.id, next)
      this.machines.set(record.id, next)
    } else {
      Object.assign(existing, next) // keep identity: candidate sets and leases hold the object
    }
    this.touch(app)
  }

  private removeMachine(appName: string, id: string): void {
    const app = this.apps.get(appName)
    if (app === undefined) return
    app.machines.delete(id)
    this.machines.delete(id)
    this.touch(app)
  }

  private updateMachine(appName: string, id: string, edit: (m: RoutableMachine) => void): void {
    const app = this.apps.get(appName)
    const m = app?.machines.get(id)
    if (app === undefined || m === undefined) return
    edit(m)
    this.touch(app)
  }

  private upsertNode(record: NodeRecord): void {
    const n = this.nodes.get(record.name)
    if (n === undefined) this.nodes.set(record.name, { region: record.region, down: false, left: record.status === 'left' })
    else { n.region = record.region; n.left = record.status === 'left' }
    this.nodesChanged()
  }

  private setNode(name: string, edit: (n: NodeState) => void): void {
    let n = this.nodes.get(name)
    if (n === undefined) {
      n = { region: '', down: false, left: false }
      this.nodes.set(name, n)
    }
    edit(n)
    this.nodesChanged()
  }

  private nodesChanged(): void {
    this.nodesVersion++
    this.changes.nodes = true
    for (const app of this.apps.values()) this.touch(app)
  }
}
