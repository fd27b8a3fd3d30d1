import '../tools/polyfills.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { openCatalog } from '../catalog/index.js'
import { proxyServer } from '../proxy/index.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'

/**
 * The edgeproxy side of the proxy benchmarks, as its own (pinned) process: a catalog in a temp dir with
 * one app and one Machine per backend address, and the proxy in front. Prints "ready <json>" when
 * listening. Input in env: BENCH_TOML (fly.toml), BENCH_MACHINES (comma-separated private addresses),
 * BENCH_PORTS (JSON public→bind port map).
 */
const toml = process.env.BENCH_TOML!
const addrs = (process.env.BENCH_MACHINES ?? '').split(',').filter(Boolean)
const portMap = JSON.parse(process.env.BENCH_PORTS ?? '{}') as Record<number, number>

const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-bench-'))
const log = pino({ level: process.env.BENCH_LOG ?? 'warn' })
const catalog = await openCatalog({ dataDir: dir, nodeName: 'bench', logger: log, sync: false })
await catalog.upsertSelf({ name: 'bench', region: 'ams', roles: ['edge', 'worker'], gossip: [], startedAt: Date.now(), load: { machines: 0, connections: 0 }, version: 'bench' })
const config = parseAppConfigText(toml).config
await catalog.deployApp(config)
for (const addr of addrs) {
  const m = await catalog.createMachine({ app: config.app, region: 'ams', node: 'bench', spec: { cmd: ['bench-backend'], env: {}, processGroup: 'app' } })
  await catalog.reportObserved(m.id, { state: 'started', reason: 'bench', privateAddr: addr })
  await catalog.reportHealth(m.id, { checks: {}, ready: true })
}
const proxy = proxyServer({ region: 'ams', portMap })({ catalog, log })
await proxy.start()
await proxy.whenApplied(catalog.lastSeq)
const bound = Object.fromEntries(Object.keys(portMap).map((p) => [p, proxy.boundPort(Number(p))]))
process.stdout.write(`ready ${JSON.stringify(bound)}\n`)

const shutdown = async (): Promise<void> => {
  await proxy.stop()
  await catalog.close()
  await rm(dir, { recursive: true, force: true })
  if (process.env.BENCH_STATS === '1') process.stderr.write(`${JSON.stringify(proxy.stats)}\n`)
  process.exit(0)
}
process.on('SIGTERM', () => { void shutdown() })
process.on('SIGINT', () => { void shutdown() })
