import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * The demo Machine (`edgeproxy dev`, `edgeproxy machines run`): answers any path with the app, Machine id
 * and region it runs as and the request headers it saw, so a user can watch routing, forwarding headers
 * and fly-replay at work. `/healthz` answers 200 "ok". Node built-ins only: it must start fast.
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

function answer(id: DemoIdentity, req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/'
  if (path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
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
