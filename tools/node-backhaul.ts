import type { Logger } from 'pino'
import type { Catalog } from '../catalog/index.js'
import type { Role } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import {
  BackhaulClient, backhaulConnector, backhaulListener, type BackhaulListener, directConnector, type MachineConnector, NodeDirectory,
  type ProxyServer,
} from '../proxy/index.js'
import { caFingerprint, readFleetCa } from './pki/fleet-ca.js'
import { nodeCredentials } from './pki/node-cert.js'

export interface BackhaulOptions {
  /** Worker: where the backhaul listener binds (default 127.0.0.1, any free port: the record publishes it). */
  listen?: { host: string; port: number }
  /** What other nodes dial (host:port), when it differs from the bound address (NAT, 0.0.0.0, a relay). */
  announce?: string
  /** A certificate made by `edgeproxy fleet node-cert` (else the data dir's, else issued with the CA key). */
  certFile?: string
  keyFile?: string
  /** Edge side timings (proxy/backhaul/backhaul-client.ts has the defaults). */
  connectTimeoutMs?: number
  pingIntervalMs?: number
  pingTimeoutMs?: number
}

export interface NodeBackhaulInit {
  dataDir: string
  name: string
  region: string
  roles: Role[]
  /** `--fleet DIR`: its ca.crt turns the backhaul on. */
  fleet: string | undefined
  options: BackhaulOptions
}

/** The backhaul of one node, ready to wire: the listener is bound, so its address can go into the node record. */
export interface NodeBackhaul {
  /** host:port for the node record (workers with a fleet CA), else undefined. */
  readonly announce: string | undefined
  /** The proxy's connect phase (edges with a fleet CA), else undefined: the proxy reaches local Machines only. */
  readonly connector: MachineConnector | undefined
  readonly listener: BackhaulListener | undefined
  readonly client: BackhaulClient | undefined
  /**
   * What the proxy and the backhaul tell each other: streams this worker holds to its Machines count as
   * their load (autostop), and a node the edge cannot dial leaves routing until it answers again.
   */
  attach(proxy: Pick<ProxyServer, 'forwardedLoad' | 'setNodeReachable'>): void
  stop(): Promise<void>
}

const UNSPECIFIED = new Set(['0.0.0.0', '::', '[::]'])

/**
 * Issue 7's wiring: reads the fleet CA, gets this node's certificate (issuing it at first start when the
 * CA key is here), binds the worker's listener and builds the edge's connector. Without a fleet CA a
 * node keeps to itself: an edge,worker node serves its own Machines, an edge-only node cannot start.
 */
export async function startNodeBackhaul(init: NodeBackhaulInit, c: { catalog: Catalog; log: Logger }): Promise<NodeBackhaul> {
  const worker = init.roles.includes('worker')
  const edge = init.roles.includes('edge')
  const ca = init.fleet === undefined ? undefined : await readFleetCa(init.fleet)
  if (ca === undefined) {
    if (!worker) {
      throw new EdgeProxyError('EP_FLEET_CA_INVALID', `--roles edge reaches Machines only over the backhaul, which needs the fleet CA: pass --fleet DIR with the ca.crt that \`edgeproxy fleet init\` wrote${init.fleet === undefined ? '' : ` (${init.fleet} has none)`}`)
    }
    if (init.fleet !== undefined) c.log.warn({ fleet: init.fleet }, 'no fleet CA (ca.crt) in the fleet folder: the backhaul is off and Machines here are reachable only through this node; run `edgeproxy fleet init --out DIR` to add one')
    return { announce: undefined, connector: undefined, listener: undefined, client: undefined, attach: () => undefined, stop: async () => undefined }
  }
  const creds = await nodeCredentials({ dataDir: init.dataDir, name: init.name, ca, certFile: init.options.certFile, keyFile: init.options.keyFile, log: c.log })
  const tls = { certPem: creds.certPem, keyPem: creds.keyPem, caPem: creds.caPem }
  const log = c.log.child({ component: 'backhaul' })

  let listener: BackhaulListener | undefined
  let announce: string | undefined
  if (worker) {
    const at = init.options.listen ?? { host: '127.0.0.1', port: 0 }
    if (UNSPECIFIED.has(at.host) && init.options.announce === undefined) {
      throw new EdgeProxyError('EP_INVALID_REQUEST', `--backhaul-listen ${at.host}:${at.port} binds every address; say which one other nodes dial with --backhaul-announce HOST:PORT`)
    }
    listener = backhaulListener({ host: at.host, port: at.port, tls })({ catalog: c.catalog, log })
    await listener.start()
    announce = init.options.announce ?? listener.address()
  }

  let client: BackhaulClient | undefined
  let directory: NodeDirectory | undefined
  let connector: MachineConnector | undefined
  if (edge) {
    const dir = new NodeDirectory(c.catalog)
    dir.start()
    directory = dir
    client = new BackhaulClient({
      tls, connectTimeoutMs: init.options.connectTimeoutMs, pingIntervalMs: init.options.pingIntervalMs, pingTimeoutMs: init.options.pingTimeoutMs,
      addressOf: (node) => dir.backhaulOf(node),
    }, log)
    connector = backhaulConnector({ self: { node: init.name, region: init.region }, local: directConnector(), client, directory })
  }
  log.info({ ca: caFingerprint(ca.certPem), cert: creds.certPath, certSource: creds.source, listen: listener?.address(), announce }, 'backhaul ready')

  return {
    announce,
    connector,
    listener,
    client,
    attach(proxy) {
      listener?.countLoadInto(proxy.forwardedLoad)
      client?.onReachability((node, reachable) => proxy.setNodeReachable(node, reachable))
    },
    async stop() {
      directory?.stop()
      client?.close()
      await listener?.stop()
    },
  }
}
