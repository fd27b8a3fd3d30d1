import { createServer as createHttpServer } from 'node:http'
import { createServer as createTcpServer } from 'node:net'

/**
 * The Machine of bench/soak.ts, run by the supervisor as any Machine is. It binds FLY_PRIVATE_IP like every
 * Machine (docs/machines.md) and serves
 * - HTTP on PORT: `/` a small JSON body naming its region, `/big` SOAK_BIG_BYTES of payload, `POST /upload`
 *   the count of bytes received, `/replay` a `fly-replay: region=iad` from any other region (answered in iad),
 *   `/healthz` for the readiness check;
 * - raw TCP on SOAK_TCP_PORT: an echo.
 * Node built-ins only, so that it starts fast after a crash. The soak finds these processes by the
 * `--soak-tag=` argument in their command line.
 */
const host = process.env.FLY_PRIVATE_IP ?? '127.0.0.1'
const region = process.env.FLY_REGION ?? 'local'
const small = Buffer.from(JSON.stringify({ region, machine: process.env.FLY_MACHINE_ID ?? 'local' }))
const big = Buffer.alloc(Number(process.env.SOAK_BIG_BYTES ?? 1048576), 0x62)

const http = createHttpServer((req, res) => {
  const path = req.url ?? '/'
  if (req.method === 'POST') {
    let bytes = 0
    req.on('data', (d: Buffer) => { bytes += d.length })
    req.on('end', () => {
      const body = Buffer.from(JSON.stringify({ region, bytes }))
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
      res.end(body)
    })
    return
  }
  req.resume()
  if (path === '/replay' && region !== 'iad') {
    res.writeHead(200, { 'fly-replay': 'region=iad', 'content-length': 0 })
    res.end()
    return
  }
  const body = path === '/big' ? big : path === '/healthz' ? Buffer.from('ok') : small
  res.writeHead(200, { 'content-type': path === '/big' ? 'application/octet-stream' : 'application/json', 'content-length': body.length })
  res.end(body)
})
// longer than the proxy's idle pool timeout, so the proxy closes idle keep-alive sockets first
http.keepAliveTimeout = 65_000
http.listen(Number(process.env.PORT ?? 8080), host)

const tcp = createTcpServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => s.destroy())
  s.pipe(s)
})
tcp.listen(Number(process.env.SOAK_TCP_PORT ?? 9000), host)

const stop = (): void => {
  http.closeAllConnections()
  http.close()
  tcp.close()
  setTimeout(() => process.exit(0), 200).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
