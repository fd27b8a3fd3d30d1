import { join } from 'node:path'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { request } from 'undici'
import { type DaemonProcess, runCli, startDaemonProcess } from '../../test/helpers/cli.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'

let dir: Awaited<ReturnType<typeof tempDir>>
const daemons: DaemonProcess[] = []

beforeEach(async () => { dir = await tempDir() })
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop()))
  await dir.remove()
})

async function node(name: string, region: string, extra: string[] = []): Promise<DaemonProcess> {
  const d = await startDaemonProcess([
    'daemon', '--name', name, '--region', region, '--data-dir', join(dir.path, name), '--admin', '127.0.0.1:0', '--no-fsync',
    '--fleet', join(dir.path, 'fleet'), '--gossip-listen', '/ip4/127.0.0.1/tcp/0', '--port-map', '80=0,443=0',
    '--heartbeat-ms', '200', '--down-after-ms', '1500', '--sync-interval-ms', '500', ...extra,
  ])
  daemons.push(d)
  return d
}

async function json<T>(url: string): Promise<T> {
  const res = await request(url)
  return (await res.body.json()) as T
}

test('daemons started with the fleet key converge: a deploy on one node is seen on the other, and a stopped node is left', async () => {
  expect((await runCli(['fleet', 'init', '--out', join(dir.path, 'fleet')])).code).toBe(0)
  const ams = await node('ams-1', 'ams')
  const self = await waitFor(async () => (await json<Array<{ name: string; gossip: string[] }>>(`${ams.api}/v1/nodes`)).find((n) => n.name === 'ams-1' && n.gossip.length > 0))
  const iad = await node('iad-1', 'iad', ['--bootstrap', self.gossip[0]])

  const nodes = await waitFor(async () => {
    const list = await json<Array<{ name: string; up: boolean; rttMs?: number }>>(`${iad.api}/v1/nodes`)
    return list.length === 2 && list.every((n) => n.up) ? list : undefined
  }, { timeoutMs: 15_000, what: 'both nodes up on iad-1' })
  expect(nodes.map((n) => n.name).sort()).toEqual(['ams-1', 'iad-1'])

  const deploy = await request(`${ams.api}/v1/apps/web`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'app = "web"\nprimary_region = "ams"\n' })
  expect(deploy.statusCode).toBe(201)
  await deploy.body.dump()
  const seen = await waitFor(async () => (await json<Array<{ name: string }>>(`${iad.api}/v1/apps`)).find((a) => a.name === 'web'), { timeoutMs: 10_000, what: 'the app on iad-1' })
  expect(seen).toMatchObject({ name: 'web', version: 1 })

  const ls = await runCli(['--api', iad.api, 'catalog', 'nodes'])
  expect(ls.stdout).toMatch(/ams-1\s+ams\s+edge,worker\s+up\s+\d+\.\d ms/)

  expect(await ams.stop()).toBe(0)
  daemons.splice(daemons.indexOf(ams), 1)
  const left = await waitFor(async () => (await json<Array<{ name: string; status: string }>>(`${iad.api}/v1/nodes`)).find((n) => n.name === 'ams-1' && n.status === 'left'), { timeoutMs: 10_000, what: 'ams-1 marked left' })
  expect(left.status).toBe('left')
})
