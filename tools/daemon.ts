import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { type Catalog, openCatalog } from '../catalog/index.js'
import type { Role } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { machineSupervisor, type MachineSupervisor, readMachineLogs } from '../machines/index.js'
import { proxyServer, type ProxyServer } from '../proxy/index.js'
import { type AdminApi, adminApi } from './admin-api/server.js'
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
  /** Loopback range for Machine addresses on this worker (default 127.66.0.0/16). */
  machineRange?: string
  /** Edge: where public listeners bind (default 127.0.0.1), and public port → bound port (dev: 80→8080, 443→8443). */
  publicAddr?: string
  portMap?: Readonly<Record<number, number>>
  /** Apps answer on `<app>.<domain>` (default localhost). */
  domain?: string
}

export interface Daemon {
  readonly catalog: Catalog
  readonly admin: AdminApi
  readonly machines: MachineSupervisor | undefined
  readonly proxy: ProxyServer | undefined
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

    // Machines stop before the catalog closes: their last reports must still be written.
    const machines = worker
      ? machineSupervisor({ dataDir: options.dataDir, machineRange: options.machineRange })({ catalog, log: log.child({ component: 'machines' }) })
      : undefined
    if (machines !== undefined) {
      await machines.start()
      started.push(machines)
    }

    // The proxy starts after the Machines (it routes to them) and, being stopped before them, drains its
    // in-flight requests while they still answer.
    const proxy = options.roles.includes('edge')
      ? proxyServer({ region: options.region, publicAddr: options.publicAddr, portMap: options.portMap, domain: options.domain })({ catalog, log: log.child({ component: 'proxy' }) })
      : undefined
    if (proxy !== undefined) {
      await proxy.start()
      started.push(proxy)
    }

    const logs = worker
      ? { read: (id: string, o: { follow: boolean; tail: number; signal: AbortSignal }) => readMachineLogs(options.dataDir, id, o) }
      : undefined
    const admin = adminApi({ host: options.admin.host, port: options.admin.port, token })({ catalog, self, logs, log: log.child({ component: 'admin-api' }) })
    await admin.start()
    started.push(admin)

    await catalog.upsertSelf({
      name: options.name,
      region: options.region,
      roles: options.roles,
      admin: admin.address(),
      publicAddr: proxy === undefined ? undefined : (options.publicAddr ?? '127.0.0.1'),
      gossip: [],
      startedAt: Date.now(),
      load: { machines: 0, connections: 0 },
      version: VERSION,
    })
    log.info({ node: options.name, region: options.region, roles: options.roles, admin: admin.address(), dataDir: options.dataDir }, 'node started')

    let stopping: Promise<void> | undefined
    return {
      catalog,
      admin,
      machines,
      proxy,
      log,
      stop() {
        stopping ??= (async () => {
          log.info('node stopping')
          await catalog.markSelfLeft().catch((err: unknown) => log.warn({ err }, 'could not mark this node as left'))
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
