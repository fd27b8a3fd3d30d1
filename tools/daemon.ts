import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { type Catalog, openCatalog, warmUpAutomerge } from '../catalog/index.js'
import type { Role } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { fleetKeyPath, gossipNode, type GossipNode, readFleetKey } from '../gossip/index.js'
import { flycastHostsFile, machineSupervisor, type MachineSupervisor, readMachineLogs } from '../machines/index.js'
import { type AutoscaleInit, proxyServer, type ProxyServer } from '../proxy/index.js'
import { catalogMachineStarter, catalogMachineStopper } from './machine-control.js'
import { type BackhaulOptions, startNodeBackhaul } from './node-backhaul.js'
import { type AdminApi, adminApi } from './admin-api/server.js'
import type { RouteExplainer } from './admin-api/components.js'
import { metricsRegistry } from './metrics/registry.js'
import { VERSION } from './version.js'

export interface DaemonOptions {
  dataDir: string
  name: string
  region: string
  roles: Role[]
  admin: { host: string; port: number }
  adminTokenFile?: string
  /** fsync each catalog batch (default true). */
  fsync?: boolean
  /**
   * Run Automerge's heal paths once after start so that V8 compiles them before a heal needs them. Default: on
   * for a node in a fleet (it has a fleet key); a node alone never heals.
   */
  warmUp?: boolean
  /** Loopback range for Machine addresses on this worker (default 127.66.0.0/16). */
  machineRange?: string
  /** Edge: where public listeners bind (default 127.0.0.1), and public port → bound port (dev: 80→8080, 443→8443). */
  publicAddr?: string
  portMap?: Readonly<Record<number, number>>
  /** Apps answer on `<app>.<domain>` (default localhost). */
  domain?: string
  /** Autostart wake timeout, autostop interval and drain (defaults 30 s, 60 s, 5 s). */
  autoscale?: AutoscaleInit
  /** CIDR Flycast addresses are allocated from (default 127.77.0.0/16; the same on every node). */
  flycastRange?: string
  /** Edge: an app's port → the port its Flycast listener binds (default: the same; dev: like portMap). */
  flycastPortMap?: Readonly<Record<number, number>>
  /** Bytes of a request body kept so fly-replay can resend it (default 10 MiB). */
  replayBodyLimit?: number
  /** Largest request body the proxy forwards (default 1 GiB); beyond it: 413. */
  requestBodyLimit?: number
  /** Share of requests written to the request log (default 0.01); responses ≥ 500 are always logged. */
  requestLogSample?: number
  /** The mTLS backhaul (issue 7): on when the fleet folder holds the fleet CA. */
  backhaul?: BackhaulOptions
  gossip?: {
    listen?: string[]
    /** Addresses peers dial instead of the listen addresses (NAT, a test relay). */
    announce?: string[]
    /** Local address for outgoing gossip connections. */
    dialFrom?: string
    bootstrap?: string[]
    /** `--fleet DIR` (holds fleet.key) or `--fleet-key PATH`; without a key the node runs alone. */
    fleet?: string
    fleetKey?: string
    heartbeatMs?: number
    downAfterMs?: number
    syncIntervalMs?: number
  }
}

/** A gossip peer on loopback only (dev, tests): every peer shares one IP, so IP colocation is no signal. */
const DEFAULT_GOSSIP_LISTEN = ['/ip4/127.0.0.1/tcp/4001']
const onLoopback = (addrs: string[]): boolean => addrs.every((a) => a.startsWith('/ip4/127.'))

export interface Daemon {
  readonly catalog: Catalog
  readonly admin: AdminApi
  readonly machines: MachineSupervisor | undefined
  readonly proxy: ProxyServer | undefined
  readonly gossip: GossipNode
  readonly log: Logger
  stop(): Promise<void>
}

interface Startable { start(): Promise<void> | void; stop(): Promise<void> | void }

async function readToken(path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined
  try {
    const token = (await readFile(path, 'utf8')).trim()
    if (token.length < 16) throw new EdgeProxyError('EP_INVALID_REQUEST', `the admin token in ${path} is shorter than 16 characters`)
    return token
  } catch (err) {
    if (err instanceof EdgeProxyError) throw err
    throw new EdgeProxyError('EP_INVALID_REQUEST', `cannot read the admin token file ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * The only place that knows every component: opens the catalog, starts the rest in dependency order and
 * stops them in reverse. A failed start stops what had started, so nothing is left behind.
 */
export async function startDaemon(options: DaemonOptions, log: Logger): Promise<Daemon> {
  const started: Startable[] = []
  const token = await readToken(options.adminTokenFile)
  const catalog = await openCatalog({ dataDir: options.dataDir, nodeName: options.name, logger: log.child({ component: 'catalog' }), sync: options.fsync ?? true })
  started.push({ start: () => undefined, stop: () => catalog.close() })
  try {
    const self = { name: options.name, region: options.region, roles: options.roles }
    const worker = options.roles.includes('worker')
    const edge = options.roles.includes('edge')
    let proxy: ProxyServer | undefined

    // Gossip owns this node's membership record and keeps the catalog converged with the fleet; it runs
    // alone (no listener) without a fleet key. The admin address is known before the API binds only when
    // its port is fixed, so the record is refreshed once the API is up.
    const g = options.gossip ?? {}
    const keyPath = fleetKeyPath({ fleet: g.fleet, fleetKey: g.fleetKey })
    const listen = g.listen ?? DEFAULT_GOSSIP_LISTEN
    // The backhaul binds before gossip starts, so this node's record carries its address from the first write.
    const backhaul = await startNodeBackhaul({
      dataDir: options.dataDir, name: options.name, region: options.region, roles: options.roles, fleet: g.fleet, options: options.backhaul ?? {},
    }, { catalog, log })
    let backhaulStopped: Promise<void> | undefined
    const stopBackhaul = (): Promise<void> => (backhaulStopped ??= backhaul.stop())
    started.push({ start: () => undefined, stop: stopBackhaul }) // a start that fails below still closes it
    const gossip = gossipNode({
      listen,
      announce: g.announce,
      dialFrom: g.dialFrom,
      bootstrap: g.bootstrap ?? [],
      dataDir: options.dataDir,
      fleetKey: keyPath === undefined ? undefined : await readFleetKey(keyPath),
      self: { region: options.region, roles: options.roles, publicAddr: edge ? (options.publicAddr ?? '127.0.0.1') : undefined, backhaul: backhaul.announce, version: VERSION },
      heartbeatMs: g.heartbeatMs,
      downAfterMs: g.downAfterMs,
      syncIntervalMs: g.syncIntervalMs,
      ipColocationFactorWeight: onLoopback(listen) ? 0 : undefined,
    })({
      catalog,
      log: log.child({ component: 'gossip' }),
      load: () => ({ machines: catalog.listMachines({ node: options.name }).filter((m) => m.state === 'started').length, connections: proxy?.stats.connectionsOpen ?? 0 }),
    })
    await gossip.start()
    started.push(gossip)

    // Machines find <app>.flycast through this file ($FLY_FLYCAST_HOSTS); it exists before the first spawn.
    if (worker) {
      const hosts = flycastHostsFile({ dataDir: options.dataDir })({ catalog, log: log.child({ component: 'flycast-hosts' }) })
      await hosts.start()
      started.push(hosts)
    }

    // Machines stop before the catalog closes: their last reports must still be written.
    const machines = worker
      ? machineSupervisor({ dataDir: options.dataDir, machineRange: options.machineRange })({ catalog, log: log.child({ component: 'machines' }) })
      : undefined
    if (machines !== undefined) {
      await machines.start()
      started.push(machines)
    }
    // Stopped after the proxy and before the Machines: requests other edges carry to this worker's Machines
    // drain (bounded) while those Machines still answer, as the proxy's own do.
    started.push({ start: () => undefined, stop: stopBackhaul })

    // The proxy starts after the Machines (it routes to them) and, being stopped before them, drains its
    // in-flight requests while they still answer.
    proxy = edge
      ? proxyServer({
        region: options.region, publicAddr: options.publicAddr, portMap: options.portMap, domain: options.domain, autoscale: options.autoscale,
        flycastPortMap: options.flycastPortMap, requestLogSample: options.requestLogSample, limits: {
          ...(options.replayBodyLimit === undefined ? {} : { maxReplayBodyBytes: options.replayBodyLimit }),
          ...(options.requestBodyLimit === undefined ? {} : { maxRequestBodyBytes: options.requestBodyLimit }),
        },
      })({
        catalog, log: log.child({ component: 'proxy' }), closeness: gossip.closeness, connector: backhaul.connector,
        // autostart asks any Machine's host through the catalog; autostop acts only on Machines this worker hosts
        starter: catalogMachineStarter(catalog), stopper: worker ? catalogMachineStopper(catalog) : undefined,
      })
      : undefined
    if (proxy !== undefined) {
      await proxy.start()
      started.push(proxy)
      backhaul.attach(proxy)
    }

    const logs = worker
      ? { read: (id: string, o: { follow: boolean; tail: number; signal: AbortSignal }) => readMachineLogs(options.dataDir, id, o) }
      : undefined
    const liveness = { isUp: (node: string) => gossip.isNodeUp(node), rttMs: (node: string) => gossip.closeness.rttToNode(node) }
    const admin = adminApi({ host: options.admin.host, port: options.admin.port, token })({ catalog, self, logs, liveness, route: routeExplainer(proxy), loads: proxy === undefined ? undefined : () => loadsByMachine(proxy), metrics: metricsRegistry({ catalog, proxy, gossip, backhaul: backhaul.listener }).render, flycastRange: options.flycastRange, log: log.child({ component: 'admin-api' }) })
    await admin.start()
    started.push(admin)

    await gossip.describeSelf({ admin: admin.address() })
    log.info({
      node: options.name, region: options.region, roles: options.roles, admin: admin.address(), dataDir: options.dataDir,
      backhaul: backhaul.listener?.address(), gossipListen: gossip.listenAddrs(),
    }, 'node started')
    if (options.warmUp ?? keyPath !== undefined) {
      const warmUp = automergeWarmUp(log.child({ component: 'catalog' }))
      warmUp.start()
      started.push(warmUp)
    }

    let stopping: Promise<void> | undefined
    return {
      catalog,
      admin,
      machines,
      proxy,
      gossip,
      log,
      stop() {
        stopping ??= (async () => {
          log.info('node stopping')
          await stopAll(started, log)
          log.info('node stopped')
        })()
        return stopping
      },
    }
  } catch (err) {
    await stopAll(started, log)
    throw err
  }
}

/** The warm-up (catalog/automerge-warm-up.ts) in the background of a started node; a stop cuts it short. */
function automergeWarmUp(log: Logger): Startable {
  const abort = new AbortController()
  let running: Promise<void> | undefined
  return {
    start() {
      running = warmUpAutomerge({ signal: abort.signal }).then(
        (r) => log.info({ rounds: r.rounds, ms: Math.round(r.ms), aborted: r.aborted }, 'Automerge warmed up'),
        (err: unknown) => log.warn({ err }, 'Automerge warm-up failed; the first heal compiles what it needs'),
      )
    },
    async stop() {
      abort.abort()
      await running
    },
  }
}

function loadsByMachine(proxy: ProxyServer): Record<string, number> {
  const out: Record<string, number> = {}
  for (const l of proxy.loads().loads) out[l.machine] = (out[l.machine] ?? 0) + l.load
  return out
}

function routeExplainer(proxy: ProxyServer | undefined): RouteExplainer | undefined {
  if (proxy === undefined) return undefined
  return { domain: proxy.index.domain, explain: (host, port, hints) => proxy.explain(host, port, hints) }
}

async function stopAll(started: Startable[], log: Logger): Promise<void> {
  while (started.length > 0) {
    const component = started.pop() as Startable
    try {
      await component.stop()
    } catch (err) {
      log.error({ err }, 'a component failed to stop')
    }
  }
}
