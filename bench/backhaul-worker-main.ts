import '../tools/polyfills.js'
import { readFileSync } from 'node:fs'
import pino from 'pino'
import { openCatalog } from '../catalog/index.js'
import { backhaulListener, type BackhaulTls } from '../proxy/index.js'

/**
 * The worker side of bench/backhaul.ts, as its own (pinned) process: the catalog the orchestrator
 * prepared (the Machine is this node's) and a backhaul listener. Prints "ready <host:port>".
 * Env: BENCH_DIR (catalog data dir), BENCH_NODE, BENCH_TLS (JSON file: BackhaulTls), BENCH_HOST.
 */
const log = pino({ level: process.env.BENCH_LOG ?? 'warn' })
const catalog = await openCatalog({ dataDir: process.env.BENCH_DIR!, nodeName: process.env.BENCH_NODE!, logger: log, sync: false })
const tls = JSON.parse(readFileSync(process.env.BENCH_TLS!, 'utf8')) as BackhaulTls
const listener = backhaulListener({ host: process.env.BENCH_HOST ?? '127.0.0.1', port: 0, tls, drainMs: 500 })({ catalog, log })
await listener.start()
process.stdout.write(`ready ${listener.address()}\n`)

const shutdown = async (): Promise<void> => {
  if (process.env.BENCH_STATS === '1') process.stderr.write(`${JSON.stringify(listener.stats())}\n`)
  await listener.stop()
  await catalog.close()
  process.exit(0)
}
process.on('SIGTERM', () => { void shutdown() })
process.on('SIGINT', () => { void shutdown() })
