import { createServer as createHttpServer } from 'node:http'
import { createServer as createTcpServer } from 'node:net'

/**
 * Backends for the proxy benchmarks, one process. BACKEND_KIND=http: node:http, keep-alive, a small body
 * (11 bytes as in shared/PERF-NOTES.md) or BACKEND_BYTES of payload. BACKEND_KIND=tcp: a sink/source that
 * answers every read with the same bytes (echo), for the raw TCP throughput run.
 */
const host = process.env.BACKEND_HOST ?? '127.0.0.1'
const port = Number(process.env.BACKEND_PORT ?? 0)
const kind = process.env.BACKEND_KIND ?? 'http'
const bytes = Number(process.env.BACKEND_BYTES ?? 11)

if (kind === 'http') {
  const body = bytes === 11 ? Buffer.from('hello world') : Buffer.alloc(bytes, 0x61)
  const server = createHttpServer((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
    res.end(body)
  })
  server.keepAliveTimeout = 65_000
  server.listen(port, host, () => process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`))
} else {
  const server = createTcpServer((s) => { s.pipe(s) })
  server.listen(port, host, () => process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`))
}
process.on('SIGTERM', () => process.exit(0))
