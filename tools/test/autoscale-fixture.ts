import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * A Machine for the autoscale tests, plain JS run by node (no build step), steered by its env. It binds
 * FLY_PRIVATE_IP:PORT and prints lines starting with "app:".
 * - MODE=http (default): `/healthz` → 200 (503 before READY_AFTER_MS); `/slow?ms=N` answers after N ms;
 *   any other path → 200 JSON {machine, pid, early} — but 502 before READY_AFTER_MS has passed since the
 *   port opened, like an nginx whose upstream still boots (FLY-SPEC §10): `early` counts those.
 * - MODE=tcp: writes "<machine id>:" and then echoes every byte back.
 * - REBIND_ONCE_MS (http): when it first answers `/healthz` with 200 (the supervisor's readiness check), the
 *   listener closes before that answer goes out and opens again that much later, as a server restarting
 *   while it boots would: whoever connects right after the Machine became ready is refused.
 * SIGINT / SIGTERM end it at once: a request still in flight would be cut.
 */
export const AUTOSCALE_FIXTURE = String.raw`
import { createServer as httpServer } from 'node:http'
import { createServer as tcpServer } from 'node:net'
const env = process.env
const host = env.FLY_PRIVATE_IP ?? '127.0.0.1'
const port = Number(env.PORT ?? 8080)
const id = env.FLY_MACHINE_ID ?? 'unknown'
const readyAfter = Number(env.READY_AFTER_MS ?? 0)
let openedAt = 0
let early = 0
const ready = () => Date.now() - openedAt >= readyAfter

function onRequest(req, res) {
  const url = new URL(req.url, 'http://x')
  if (url.pathname === '/healthz') {
    if (ready() && rebind !== undefined) restart()
    res.writeHead(ready() ? 200 : 503).end(ready() ? 'ok' : 'booting')
    return
  }
  if (!ready()) { early++; res.writeHead(502).end('not ready yet'); return }
  const body = () => JSON.stringify({ machine: id, pid: process.pid, early, path: url.pathname })
  if (url.pathname === '/slow') {
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(body()), Number(url.searchParams.get('ms') ?? 1000))
    return
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(body())
}

function onSocket(socket) {
  socket.write(id + ':')
  socket.pipe(socket)
  socket.on('error', () => {})
}

const make = () => env.MODE === 'tcp' ? tcpServer(onSocket) : httpServer(onRequest)
let rebind = env.REBIND_ONCE_MS === undefined ? undefined : Number(env.REBIND_ONCE_MS)
let current
function restart() {
  const after = rebind
  rebind = undefined
  current.close()
  console.log('app: listener closed, reopening in ' + after + ' ms')
  setTimeout(() => listen(make()), after)
}
function listen(server) {
  current = server
  server.listen(port, host, () => {
    if (openedAt === 0) openedAt = Date.now()
    console.log('app: ' + id + ' listening on ' + host + ':' + port)
  })
}
listen(make())
const bye = (sig) => { console.log('app: got ' + sig + ', exiting'); process.exit(0) }
process.on('SIGINT', () => bye('SIGINT'))
process.on('SIGTERM', () => bye('SIGTERM'))
`

export async function writeAutoscaleFixture(dir: string): Promise<string> {
  const path = join(dir, 'autoscale-fixture.mjs')
  await writeFile(path, AUTOSCALE_FIXTURE)
  return path
}
