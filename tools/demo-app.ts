import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http'
import { readFileSync, realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * The demo Machine (`edgeproxy dev`, `edgeproxy machines run`): answers any path with the app, Machine id
 * and region it runs as and the request headers it saw, so a user can watch routing, forwarding headers
 * and fly-replay at work (`?fly-replay=region=iad` makes it ask for one). `/healthz` answers 200 "ok";
 * `/flycast?url=http://<app>.flycast:<port>/` calls another app over Flycast. Node built-ins only: it
 * must start fast.
 *
 * It binds FLY_PRIVATE_IP:PORT, as every Machine must: several Machines share one host, so binding
 * 0.0.0.0:8080 would collide (docs/machines.md).
 */
export interface DemoIdentity {
  app: string
  machine: string
  region: string
  privateIp: string
  port: number
}

export function demoIdentity(env: NodeJS.ProcessEnv = process.env): DemoIdentity {
  return {
    app: env.FLY_APP_NAME ?? 'demo',
    machine: env.FLY_MACHINE_ID ?? 'local',
    region: env.FLY_REGION ?? 'local',
    privateIp: env.FLY_PRIVATE_IP ?? '127.0.0.1',
    port: Number(env.PORT ?? 8080),
  }
}

function wantsHtml(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? ''
  return accept.includes('text/html')
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/**
 * `<app>.flycast` → its private address, from the hosts-format file the node keeps for its Machines
 * ($FLY_FLYCAST_HOSTS, docs/replay-and-flycast.md). Read at each lookup: addresses may be allocated later.
 */
export function resolveFlycast(name: string, file = process.env.FLY_FLYCAST_HOSTS): string | undefined {
  if (file === undefined) return undefined
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return undefined // no Flycast names on this node yet
  }
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const [address, ...names] = line.trim().split(/\s+/)
    if (names.includes(name.toLowerCase())) return address
  }
  return undefined
}

/** `/flycast?url=http://<app>.flycast:<port>/path`: fetches through the app's Flycast address (app-to-app). */
function viaFlycast(target: string | null, res: ServerResponse): void {
  let url: URL | undefined
  try {
    url = target === null ? undefined : new URL(target)
  } catch {
    url = undefined // not a URL: answered below
  }
  const address = url?.hostname.endsWith('.flycast') === true ? resolveFlycast(url.hostname) : undefined
  if (url === undefined || address === undefined) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end(`expected ?url=http://<app>.flycast:<port>/path naming an app with a Flycast address (edgeproxy apps flycast APP)\n`)
    return
  }
  const out = request({ host: address, port: Number(url.port || 80), path: `${url.pathname}${url.search}`, headers: { host: url.host }, timeout: 10_000 }, (r) => {
    let body = ''
    r.setEncoding('utf8')
    r.on('data', (d: string) => { body += d })
    r.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: target, via: address, status: r.statusCode, body })))
  })
  out.on('timeout', () => out.destroy(new Error('timed out')))
  out.on('error', (err: NodeJS.ErrnoException) => { if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`${target} via ${address}: ${err.code ?? err.message}\n`) })
  out.end()
}

function answer(id: DemoIdentity, req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/'
  if (path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
    return
  }
  const query = URL.canParse(path, 'http://demo') ? new URL(path, 'http://demo') : undefined
  if (query?.pathname === '/flycast') { viaFlycast(query.searchParams.get('url'), res); return }
  // `?fly-replay=region=iad;state=x` answers with that fly-replay, unless the request is already a replay
  const replay = query?.searchParams.get('fly-replay') ?? null
  if (replay !== null && req.headers['fly-replay-src'] === undefined && req.headers['fly-replay-failed'] === undefined && !/[\r\n\0]/.test(replay)) {
    req.resume()
    res.writeHead(200, { 'fly-replay': replay, 'content-length': 0 }).end()
    return
  }
  const body = { app: id.app, machine: id.machine, region: id.region, method: req.method, path, headers: req.headers }
  if (wantsHtml(req)) {
    const rows = Object.entries(req.headers).map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(String(v))}</td></tr>`).join('')
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(
      `<!doctype html><title>${escapeHtml(id.app)}</title><h1>${escapeHtml(id.app)}</h1>` +
      `<p>Machine <b>${escapeHtml(id.machine)}</b> in region <b>${escapeHtml(id.region)}</b> answered ${escapeHtml(req.method ?? '')} ${escapeHtml(path)}</p>` +
      `<table>${rows}</table>`,
    )
    return
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}

export function createDemoApp(id: DemoIdentity): Server {
  return createServer((req, res) => answer(id, req, res))
}

async function main(): Promise<void> {
  const id = demoIdentity()
  const server = createDemoApp(id)
  server.on('error', (err: NodeJS.ErrnoException) => {
    console.error(`demo app: cannot listen on ${id.privateIp}:${id.port}: ${err.code ?? err.message}`)
    process.exit(1)
  })
  server.listen(id.port, id.privateIp, () => {
    console.log(`demo app ${id.app} (Machine ${id.machine}, region ${id.region}) listening on http://${id.privateIp}:${id.port}`)
  })
  const shutdown = (signal: string): void => {
    console.log(`demo app: ${signal} received, shutting down`)
    server.close(() => process.exit(0))
    server.closeAllConnections()
  }
  process.once('SIGINT', () => shutdown('SIGINT'))
  process.once('SIGTERM', () => shutdown('SIGTERM'))
}

function isEntrypoint(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false // argv[1] is not a file (a REPL, `node -e`): we were imported, not run
  }
}
if (isEntrypoint()) void main()
