import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * A Machine for the Flycast tests, plain JS run by node. It binds FLY_PRIVATE_IP:PORT and answers:
 * - `/healthz` → 200;
 * - `/call?name=<app>.flycast&port=N&path=P` → looks the name up in the hosts file named by
 *   $FLY_FLYCAST_HOSTS (read at each lookup, as docs/replay-and-flycast.md says), fetches
 *   `http://<name>:N<P>` through the address it found, and answers JSON {resolved, status, body};
 * - anything else → JSON {app, machine, path, headers}.
 */
export const FLYCAST_FIXTURE = String.raw`
import { createServer, request } from 'node:http'
import { readFileSync } from 'node:fs'
const env = process.env

function resolveFlycast(name) {
  for (const line of readFileSync(env.FLY_FLYCAST_HOSTS, 'utf8').split('\n')) {
    if (line.startsWith('#')) continue
    const [address, ...names] = line.trim().split(/\s+/)
    if (names.includes(name)) return address
  }
  return undefined
}

function call(url, res) {
  const name = url.searchParams.get('name')
  const resolved = resolveFlycast(name)
  if (resolved === undefined) { res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'cannot resolve ' + name })); return }
  const port = Number(url.searchParams.get('port') ?? 80)
  const out = request({ host: resolved, port, path: url.searchParams.get('path') ?? '/', headers: { host: name + ':' + port }, timeout: 20000 }, (r) => {
    let body = ''
    r.setEncoding('utf8')
    r.on('data', (d) => { body += d })
    r.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ resolved, status: r.statusCode, error: r.headers['edgeproxy-error'], body })))
  })
  out.on('error', (err) => res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ resolved, error: err.code ?? err.message })))
  out.end()
}

createServer((req, res) => {
  const url = new URL(req.url, 'http://x')
  if (url.pathname === '/healthz') { res.writeHead(200).end('ok'); return }
  if (url.pathname === '/call') { call(url, res); return }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ app: env.FLY_APP_NAME, machine: env.FLY_MACHINE_ID, path: url.pathname, headers: req.headers }))
}).listen(Number(env.PORT ?? 8080), env.FLY_PRIVATE_IP ?? '127.0.0.1')
process.on('SIGINT', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))
`

export async function writeFlycastFixture(dir: string): Promise<string> {
  const path = join(dir, 'flycast-machine.mjs')
  await writeFile(path, FLYCAST_FIXTURE)
  return path
}
