import { randomInt } from 'node:crypto'
import { join } from 'node:path'
import { request } from 'undici'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { type DaemonProcess, runCli, startDaemonProcess } from '../../test/helpers/cli.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { writeAutoscaleFixture } from './autoscale-fixture.js'

let dir: Awaited<ReturnType<typeof tempDir>>
const daemons: DaemonProcess[] = []

beforeEach(async () => { dir = await tempDir() })
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop()))
  await dir.remove()
})

async function node(name: string, region: string, roles: string, extra: string[] = []): Promise<DaemonProcess> {
  const d = await startDaemonProcess([
    'daemon', '--name', name, '--region', region, '--roles', roles, '--data-dir', join(dir.path, name), '--admin', '127.0.0.1:0', '--no-fsync',
    '--fleet', join(dir.path, 'fleet'), '--gossip-listen', '/ip4/127.0.0.1/tcp/0', '--port-map', '80=0',
    '--heartbeat-ms', '200', '--down-after-ms', '1500', '--sync-interval-ms', '500', ...extra,
  ])
  daemons.push(d)
  return d
}

async function json<T>(url: string, init: { method?: 'GET' | 'POST' | 'PUT'; body?: string; type?: string } = {}): Promise<T> {
  const res = await request(url, { method: init.method ?? 'GET', body: init.body, headers: init.body === undefined ? {} : { 'content-type': init.type ?? 'application/json' } })
  const text = await res.body.text()
  if (res.statusCode >= 300) throw new Error(`${init.method ?? 'GET'} ${url}: ${res.statusCode} ${text}`)
  return JSON.parse(text) as T
}

/** The address the proxy bound for public port `port`, from its "public listener open" log line. */
function publicAddress(d: DaemonProcess, port: number): string | undefined {
  for (const line of d.logs().split('\n')) {
    if (!line.includes('"public listener open"')) continue
    const rec = JSON.parse(line) as { port: number; bind: string }
    if (rec.port === port) return rec.bind
  }
  return undefined
}

// ams-1 is an edge only: it has no supervisor and reaches Machines of other nodes only over the mTLS backhaul
test('a request on an edge starts a stopped Machine hosted on a worker, through the catalog, and is answered by it over the backhaul', async () => {
  expect((await runCli(['fleet', 'init', '--out', join(dir.path, 'fleet')])).code).toBe(0)
  const fixture = await writeAutoscaleFixture(dir.path)
  const ams = await node('ams-1', 'ams', 'edge', ['--wake-timeout-ms', '20000'])
  const self = await waitFor(async () => (await json<Array<{ name: string; gossip: string[] }>>(`${ams.api}/v1/nodes`)).find((n) => n.name === 'ams-1' && n.gossip.length > 0))
  const iad = await node('iad-1', 'iad', 'worker', ['--bootstrap', self.gossip[0]])
  await waitFor(async () => {
    const list = await json<Array<{ name: string; up: boolean }>>(`${ams.api}/v1/nodes`)
    return list.length === 2 && list.every((n) => n.up)
  }, { timeoutMs: 15_000, what: 'both nodes up on ams-1' })

  const port = randomInt(20_000, 60_000)
  const toml = `app = "far"\nprimary_region = "iad"\n[[services]]\n  internal_port = ${port}\n  protocol = "tcp"\n  [[services.ports]]\n    port = 80\n    handlers = ["http"]\n  [[services.http_checks]]\n    path = "/healthz"\n    interval = "1s"\n    timeout = "1s"\n`
  await json(`${ams.api}/v1/apps/far`, { method: 'PUT', body: toml, type: 'text/plain' })
  await waitFor(async () => (await json<Array<{ name: string }>>(`${iad.api}/v1/apps`)).some((a) => a.name === 'far'), { timeoutMs: 10_000, what: 'the app on iad-1' })
  const created = await json<{ id: string }>(`${iad.api}/v1/apps/far/machines`, { method: 'POST', body: JSON.stringify({ node: 'iad-1', region: 'iad', desired: 'stopped', cmd: [process.execPath, fixture] }) })
  await waitFor(async () => (await json<{ state: string }>(`${ams.api}/v1/machines/${created.id}`)).state === 'stopped', { timeoutMs: 10_000, what: 'ams-1 to see the Machine stopped' })
  const bind = await waitFor(() => publicAddress(ams, 80), { what: 'the public listener of port 80 on ams-1' })

  const res = await request(`http://${bind}/`, { headers: { host: 'far.localhost' }, headersTimeout: 25_000 })

  const text = await res.body.text()
  expect(res.statusCode, text).toBe(200)
  expect(JSON.parse(text)).toMatchObject({ machine: created.id, early: 0 })
  const requestId = res.headers['fly-request-id'] as string
  // the host's event log: the start request came from ams-1, its supervisor reported the reason with it
  const tail = await runCli(['--api', iad.api, 'events', 'tail', '--from', '1', '--app', 'far'])
  expect(tail.code).toBe(0)
  expect(tail.stdout).toMatch(new RegExp(`ams-1\\s+machine\\.upserted\\s+far/${created.id} desired=started \\(autostart: request ${requestId}\\)`))
  expect(tail.stdout).toMatch(new RegExp(`iad-1\\s+machine\\.state\\s+far/${created.id} stopped → starting \\(autostart: request ${requestId}\\)`))
  expect(tail.stdout).toMatch(new RegExp(`iad-1\\s+machine\\.state\\s+far/${created.id} starting → started \\(autostart: request ${requestId}\\)`))
}, 60_000)
