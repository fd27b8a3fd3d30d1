import '../tools/polyfills.js'
import { writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector'
import pino from 'pino'
import { openCatalog, warmUpAutomerge } from '../catalog/index.js'
import { gossipNode, readFleetKey } from '../gossip/index.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'

/**
 * One daemon-like node of the gossip benchmark: a catalog in its own data dir and a gossip node, driven by
 * the parent over IPC (write an app, report digest and memory, stop). It reports when each benchmark app
 * becomes visible here, by the catalog event the proxy would see.
 */
export interface GossipChildConfig {
  name: string
  dataDir: string
  fleetKeyPath: string
  ip: string
  bootstrap: string[]
  /** Relay address to announce instead of the listen address (partition phase). */
  announce?: string
  fsync: boolean
}

export type ToChild =
  | { type: 'write'; app: string }
  /** Connect to these nodes: for a child without its own peer discovery (gossip-raw-child.ts). */
  | { type: 'dial'; addrs: string[] }
  | { type: 'digest'; id: number }
  | { type: 'stats'; id: number }
  /** CPU profile of the next `ms` into `file` (node:inspector), for finding where an idle or busy node spends. */
  | { type: 'profile'; id: number; ms: number; file: string }
  | { type: 'stop' }

export type FromChild =
  | { type: 'ready'; peerId: string; listen: string[]; addrs: string[] }
  | { type: 'wrote'; app: string; t: number }
  | { type: 'seen'; app: string; t: number }
  /** `changedAt`: epoch ms since when this node has held exactly this digest (the raw child has none). */
  | { type: 'digest'; id: number; hash: string; changedAt?: number }
  | { type: 'profiled'; id: number }
  | { type: 'stats'; id: number; rss: number; heapUsed: number; cpuMs: number; peers: number; meshPeers: number; nodesUp: number; gossip: Record<string, unknown> }

const cfg = JSON.parse(process.argv[2] ?? '{}') as GossipChildConfig
const send = (m: FromChild): void => { process.send?.(m) }
const log = pino({ level: process.env.BENCH_GOSSIP_LOG ?? 'error' }, pino.destination(2))
const config = (app: string) => parseAppConfigText(`app = "${app}"\nprimary_region = "ams"\n[http_service]\ninternal_port = 8080\n`).config

const catalog = await openCatalog({ dataDir: cfg.dataDir, nodeName: cfg.name, logger: log, sync: cfg.fsync })
const gossip = gossipNode({
  listen: [`/ip4/${cfg.ip}/tcp/0`],
  bootstrap: cfg.bootstrap,
  fleetKey: await readFleetKey(cfg.fleetKeyPath),
  dataDir: cfg.dataDir,
  self: { region: 'ams', roles: ['edge', 'worker'], version: 'bench' },
  ipColocationFactorWeight: 0, // every node shares the loopback IP range
  ...(process.env.BENCH_GOSSIP_FANOUT === undefined ? {} : { syncFanout: Number(process.env.BENCH_GOSSIP_FANOUT) }),
  ...(process.env.BENCH_GOSSIP_REDIAL_MAX === undefined ? {} : { redialMaxMs: Number(process.env.BENCH_GOSSIP_REDIAL_MAX) }),
  // BENCH_GOSSIP_REDIALS=N: redials of unreachable peers per second per node (a large N: no budget)
  ...(process.env.BENCH_GOSSIP_REDIALS === undefined ? {} : { redialsPerSecond: Number(process.env.BENCH_GOSSIP_REDIALS) }),
  // BENCH_GOSSIP_MESH=D compares gossipsub mesh degrees (the transport cost per forwarded message scales with D)
  tuning: {
    ...(process.env.BENCH_GOSSIP_MESH === undefined ? {} : { meshDegree: Number(process.env.BENCH_GOSSIP_MESH) }),
    // BENCH_GOSSIP_RELAY_MAX=0 turns off broadcasting on what sync sessions bring (gossip/sync-relay.ts)
    ...(process.env.BENCH_GOSSIP_RELAY_MAX === undefined ? {} : { syncRelayMaxBytes: Number(process.env.BENCH_GOSSIP_RELAY_MAX) }),
  },
  ...(cfg.announce === undefined ? {} : { announce: [cfg.announce], dialFrom: cfg.ip }),
})({ catalog, log })
await gossip.start()

catalog.subscribe({}, (e) => {
  if (e.type === 'app.upserted' && e.app.name.startsWith('b-')) send({ type: 'seen', app: e.app.name, t: Date.now() })
})

process.on('message', (m: ToChild) => {
  void handle(m).catch((err: unknown) => log.error({ err, m }, 'bench command failed'))
})

async function handle(m: ToChild): Promise<void> {
  switch (m.type) {
    case 'write': {
      const t = Date.now()
      await catalog.deployApp(config(m.app))
      send({ type: 'wrote', app: m.app, t })
      break
    }
    case 'dial':
      break // the daemon dials the nodes it learns of itself (gossip/peer-dialer.ts)
    case 'digest':
      // the running hash (O(1)): recomputing it from digest() on every poll cost a node ~5 % of its CPU in a heal
      send({ type: 'digest', id: m.id, hash: Buffer.from(catalog.digestHash()).toString('hex'), changedAt: catalog.digestChangedAt() })
      break
    case 'stats': {
      const s = gossip.stats()
      const cpu = process.cpuUsage()
      const mem = process.memoryUsage()
      send({ type: 'stats', id: m.id, rss: mem.rss, heapUsed: mem.heapUsed, cpuMs: (cpu.user + cpu.system) / 1000, peers: s.peers, meshPeers: s.meshPeers, nodesUp: s.nodesUp, gossip: { ...s } })
      break
    }
    case 'profile':
      await cpuProfile(m.ms, m.file)
      send({ type: 'profiled', id: m.id })
      break
    case 'stop':
      warmUpStop.abort()
      await warmingUp
      await gossip.stop()
      await catalog.close()
      process.exit(0)
  }
}

async function cpuProfile(ms: number, file: string): Promise<void> {
  const session = new Session()
  session.connect()
  const post = (method: string, params?: object) => new Promise<unknown>((resolve, reject) => {
    session.post(method, params, (err, r) => { if (err === null) resolve(r); else reject(err) })
  })
  try {
    await post('Profiler.enable')
    await post('Profiler.start')
    await new Promise((resolve) => setTimeout(resolve, ms))
    const { profile } = await post('Profiler.stop') as { profile: unknown }
    await writeFile(file, JSON.stringify(profile))
  } finally {
    session.disconnect()
  }
}

// a probe run now and then ends with a node that did not answer for 10 s: say whether its event loop was stalled
let tickedAt = performance.now()
setInterval(() => {
  const now = performance.now()
  if (now - tickedAt > 3_000) log.error({ node: cfg.name, stalledMs: Math.round(now - tickedAt - 250) }, 'event loop stalled')
  tickedAt = now
}, 250).unref()

send({ type: 'ready', peerId: gossip.peerId, listen: gossip.listenAddrs(), addrs: gossip.multiaddrs() })

// as the daemon in a fleet does once started (tools/daemon.ts); BENCH_GOSSIP_AUTOMERGE_WARMUP=0 leaves it out, to compare
const warmUpStop = new AbortController()
const warmingUp = process.env.BENCH_GOSSIP_AUTOMERGE_WARMUP === '0' ? undefined : warmUpAutomerge({ signal: warmUpStop.signal }).catch((err: unknown) => log.error({ err }, 'warm-up failed'))
