import '../tools/polyfills.js'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import { startDaemon } from '../tools/daemon.js'

/**
 * The edgeproxy side of the autoscale benchmark, as its own (pinned) process: one real node (tools/daemon.ts:
 * catalog with fsync as in production, supervisor, proxy, admin API), with autostop off (the benchmark sets
 * Machine states itself through the admin API). Deploys the apps in BENCH_TOMLS, writes the benchmark's
 * Machine program to its data dir and prints "ready <json>" with the admin address, the bound public port 80
 * and that program's path.
 */
const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-bench-autoscale-'))
const app = join(dir, 'bench-app.mjs')
await writeFile(app, BENCH_APP())
const daemon = await startDaemon({
  dataDir: join(dir, 'node'),
  name: 'bench-1',
  region: 'ams',
  roles: ['edge', 'worker'],
  admin: { host: '127.0.0.1', port: 0 },
  fsync: process.env.BENCH_FSYNC !== '0',
  machineRange: '127.66.240.0/24',
  portMap: { 80: 0 },
  autoscale: { autostopIntervalMs: 3_600_000, wakeTimeoutMs: 30_000 },
}, pino({ level: process.env.BENCH_LOG ?? 'warn' }))
// the apps of the benchmark: BENCH_TOMLS, a JSON array of fly.toml texts
for (const toml of JSON.parse(process.env.BENCH_TOMLS ?? '[]') as string[]) await daemon.catalog.deployApp(parseAppConfigText(toml).config)
await daemon.proxy!.whenApplied(daemon.catalog.lastSeq)
process.stdout.write(`ready ${JSON.stringify({ admin: daemon.admin.address(), app, port80: daemon.proxy!.boundPort(80) })}\n`)

const shutdown = async (): Promise<void> => {
  await daemon.stop()
  await rm(dir, { recursive: true, force: true })
  process.exit(0)
}
process.on('SIGTERM', () => { void shutdown() })
process.on('SIGINT', () => { void shutdown() })

/**
 * The Machine: a node:http server that says when it was ready by its own clock (epoch ms, sub-ms), so the
 * benchmark can subtract the app's own start time from what the client saw.
 */
function BENCH_APP(): string {
  return String.raw`
import { createServer } from 'node:http'
const host = process.env.FLY_PRIVATE_IP ?? '127.0.0.1'
const port = Number(process.env.PORT ?? 8080)
let readyAt = 0
const server = createServer((req, res) => {
  if (req.url === '/healthz') { res.writeHead(200).end('ok'); return }
  const receivedAt = performance.timeOrigin + performance.now()
  const body = JSON.stringify({ machine: process.env.FLY_MACHINE_ID, readyAt, receivedAt, pid: process.pid })
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
})
server.listen(port, host, () => { readyAt = performance.timeOrigin + performance.now() })
process.on('SIGINT', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))
`
}
