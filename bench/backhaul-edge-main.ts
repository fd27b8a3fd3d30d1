import '../tools/polyfills.js'
import { readFileSync } from 'node:fs'
import pino from 'pino'
import { openCatalog } from '../catalog/index.js'
import { BackhaulClient, backhaulConnector, type BackhaulTls, directConnector, proxyServer } from '../proxy/index.js'

/**
 * The edge side of bench/backhaul.ts, as its own (pinned) process: the prepared catalog (its Machine is on
 * the worker node) and the proxy, connecting over the backhaul to the worker at BENCH_WORKER_ADDR.
 * Prints "ready <json of bound ports>". Env: BENCH_DIR, BENCH_NODE, BENCH_TLS, BENCH_WORKER,
 * BENCH_WORKER_ADDR, BENCH_PORTS (JSON public→bind port map).
 */
const log = pino({ level: process.env.BENCH_LOG ?? 'warn' })
const node = process.env.BENCH_NODE!
const catalog = await openCatalog({ dataDir: process.env.BENCH_DIR!, nodeName: node, logger: log, sync: false })
const tls = JSON.parse(readFileSync(process.env.BENCH_TLS!, 'utf8')) as BackhaulTls
const worker = process.env.BENCH_WORKER!
const workerAddr = process.env.BENCH_WORKER_ADDR!
const client = new BackhaulClient({ tls }, log)
const connector = backhaulConnector({
  self: { node, region: 'ams' },
  local: directConnector(),
  client,
  directory: { backhaulOf: (n) => (n === worker ? workerAddr : undefined) },
})
const portMap = JSON.parse(process.env.BENCH_PORTS ?? '{}') as Record<number, number>
const proxy = proxyServer({ region: 'ams', portMap })({ catalog, log, connector })
await proxy.start()
await proxy.whenApplied(catalog.lastSeq)
const bound = Object.fromEntries(Object.keys(portMap).map((p) => [p, proxy.boundPort(Number(p))]))
process.stdout.write(`ready ${JSON.stringify(bound)}\n`)

const shutdown = async (): Promise<void> => {
  await proxy.stop()
  if (process.env.BENCH_STATS === '1') process.stderr.write(`${JSON.stringify(client.stats())}\n`)
  client.close()
  await catalog.close()
  process.exit(0)
}
process.on('SIGTERM', () => { void shutdown() })
process.on('SIGINT', () => { void shutdown() })
