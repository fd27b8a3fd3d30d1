import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { packageRoot } from '../version.js'

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
}

/** `/ui`: the live fleet dashboard, three static files read once at start. */
export function uiRoutes(server: FastifyInstance): void {
  const dir = join(packageRoot(), 'tools', 'admin-api', 'ui')
  const content = new Map(Object.keys(FILES).map((f) => [f, readFileSync(join(dir, f))]))
  const send = (file: string) => async (_req: unknown, reply: { header: (k: string, v: string) => unknown; type: (t: string) => { send: (b: Buffer) => unknown } }) => {
    reply.header('cache-control', 'no-cache')
    reply.header('content-security-policy', "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'")
    return reply.type(FILES[file]).send(content.get(file) as Buffer)
  }
  server.get('/ui', send('index.html'))
  server.get('/ui/', send('index.html'))
  for (const file of Object.keys(FILES)) server.get(`/ui/${file}`, send(file))
}
