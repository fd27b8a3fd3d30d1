import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * A small Machine written to a temp dir as plain JS (no build step), steered by its env:
 * - binds FLY_PRIVATE_IP:PORT; `/healthz` → 200, or 503 while the file UNHEALTHY_FILE exists or before
 *   HEALTHY_AFTER_MS have passed since the port opened; any other path → JSON of its env and request headers
 * - FORCE_HTTPS=1: answers 301 to https:// unless the request has X-Forwarded-Proto: https (like force_https)
 * - IGNORE_SIGNALS=1: ignores SIGINT and SIGTERM (only SIGKILL ends it)
 * - CRASH_AFTER_MS: exits with code 3 after that long
 * - GRANDCHILD=1: starts a child process that sleeps forever (must die with the Machine)
 * - PRINT_EVERY_MS: prints a numbered line to stdout that often
 * Every line it prints starts with "app:".
 */
export const FIXTURE_APP = String.raw`
import { createServer } from 'node:http'
import { existsSync } from 'node:fs'
import { spawn } from 'node:child_process'
const env = process.env
const host = env.FLY_PRIVATE_IP ?? '127.0.0.1'
const port = Number(env.PORT ?? 8080)
let openedAt = 0
const server = createServer((req, res) => {
  if (env.FORCE_HTTPS === '1' && req.headers['x-forwarded-proto'] !== 'https') {
    res.writeHead(301, { location: 'https://' + req.headers.host + req.url }).end()
    return
  }
  if (req.url === '/healthz') {
    const waiting = env.HEALTHY_AFTER_MS !== undefined && Date.now() - openedAt < Number(env.HEALTHY_AFTER_MS)
    const sick = env.UNHEALTHY_FILE !== undefined && existsSync(env.UNHEALTHY_FILE)
    res.writeHead(waiting || sick ? 503 : 200).end(waiting || sick ? 'not yet' : 'ok')
    return
  }
  if (req.url === '/redirect') { res.writeHead(301, { location: 'https://example.com/' }).end(); return }
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ env: Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('npm_'))), headers: req.headers, pid: process.pid }))
})
server.listen(port, host, () => {
  openedAt = Date.now()
  console.log('app: listening on ' + host + ':' + port + ' pid ' + process.pid)
})
if (env.IGNORE_SIGNALS === '1') {
  process.on('SIGINT', () => console.log('app: ignoring SIGINT'))
  process.on('SIGTERM', () => console.log('app: ignoring SIGTERM'))
} else {
  const bye = (sig) => { console.log('app: got ' + sig + ', exiting'); server.close(); process.exit(0) }
  process.on('SIGINT', () => bye('SIGINT'))
  process.on('SIGTERM', () => bye('SIGTERM'))
}
if (env.CRASH_AFTER_MS !== undefined) setTimeout(() => { console.error('app: crashing on purpose'); process.exit(3) }, Number(env.CRASH_AFTER_MS))
if (env.GRANDCHILD === '1') {
  const child = spawn(process.execPath, ['-e', 'process.on("SIGINT",()=>{});setInterval(()=>{},1000)'], { stdio: 'ignore' })
  console.log('app: grandchild ' + child.pid)
}
if (env.PRINT_EVERY_MS !== undefined) { let n = 0; setInterval(() => console.log('app: tick ' + (n++)), Number(env.PRINT_EVERY_MS)) }
`

export async function writeFixtureApp(dir: string): Promise<string> {
  const path = join(dir, 'fixture-app.mjs')
  await writeFile(path, FIXTURE_APP)
  return path
}
