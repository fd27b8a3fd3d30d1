// The Machine of the burst-to-zero test (issue 11 item 14), run by a worker's supervisor (node built-ins
// only). Like an app whose server listens before it can serve (FLY-SPEC §10), its port opens at once but
// it is ready only READY_AFTER_MS later: until then `/healthz` answers 503 and any other request is an
// "early" one — answered 503 and counted, since routing must never send one.
//
//   GET /healthz  200 once ready, else 503
//   GET /__stats  JSON { machine, pid, served, early, inflight, maxInflight, readyAt, firstRequestAt } (not counted)
//   anything else JSON { machine, pid } after ?ms=N milliseconds (once ready)
import { createServer } from 'node:http'

const env = process.env
const readyAfter = Number(env.READY_AFTER_MS ?? 0)
const stats = { machine: env.FLY_MACHINE_ID, pid: process.pid, served: 0, early: 0, inflight: 0, maxInflight: 0, readyAt: 0, firstRequestAt: 0 }
let openedAt = 0
const ready = () => {
  if (openedAt === 0 || Date.now() - openedAt < readyAfter) return false
  if (stats.readyAt === 0) stats.readyAt = openedAt + readyAfter
  return true
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://machine')
  if (url.pathname === '/healthz') { const ok = ready(); res.writeHead(ok ? 200 : 503).end(ok ? 'ok' : 'booting'); return }
  if (url.pathname === '/__stats') {
    const body = JSON.stringify(stats)
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
    return
  }
  if (stats.firstRequestAt === 0) stats.firstRequestAt = Date.now()
  if (!ready()) { stats.early++; res.writeHead(503, { 'content-type': 'text/plain' }).end('not ready yet'); return }
  stats.inflight++
  stats.maxInflight = Math.max(stats.maxInflight, stats.inflight)
  req.resume()
  setTimeout(() => {
    stats.inflight--
    stats.served++
    const body = JSON.stringify({ machine: stats.machine, pid: process.pid })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
  }, Number(url.searchParams.get('ms') ?? 0))
})
server.keepAliveTimeout = 5000
server.listen(Number(env.PORT ?? 8080), env.FLY_PRIVATE_IP ?? '127.0.0.1', () => { openedAt = Date.now() })

const stop = () => {
  server.close(() => process.exit(0))
  server.closeIdleConnections()
  setTimeout(() => process.exit(0), 3000).unref()
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
