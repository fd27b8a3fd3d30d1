import { randomInt } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import pino from 'pino'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { demoAppCommand, flycastHostsPath } from '../../machines/index.js'
import { runCli } from '../../test/helpers/cli.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { type Daemon, startDaemon } from '../daemon.js'
import { writeFlycastFixture } from './flycast-fixture.js'

/**
 * One real node in this process (catalog, supervisor with real Machine processes, proxy, admin API), with
 * its Machines, public listeners and Flycast addresses on loopback ranges of its own.
 */
interface Node {
  daemon: Daemon
  dataDir: string
  admin: string
  deploy(app: string, extra?: string): Promise<void>
  machine(app: string, desired?: 'started' | 'stopped', cmd?: string[]): Promise<MachineRecord>
  flycast(app: string): Promise<{ status: number; address: string; allocated: boolean }>
  /** GET through the public listener. */
  get(app: string, path: string): Promise<{ status: number; headers: Record<string, unknown>; text: string }>
  stop(): Promise<void>
}

let node: Node | undefined
afterEach(async () => { await node?.stop(); node = undefined })

async function startNode(): Promise<Node> {
  const dir = await tempDir('edgeproxy-flycast-')
  const fixture = await writeFlycastFixture(dir.path)
  const port = randomInt(20_000, 60_000)
  let daemon: Daemon
  try {
    daemon = await startDaemon({
      dataDir: dir.path, name: 'ams-1', region: 'ams', roles: ['edge', 'worker'], admin: { host: '127.0.0.1', port: 0 }, fsync: false,
      machineRange: `127.66.${randomInt(20, 250)}.0/24`,
      flycastRange: `127.78.${randomInt(20, 250)}.0/24`,
      portMap: { 80: 0 },
      flycastPortMap: { 80: 0 },
    }, pino({ level: process.env.EP_TEST_LOG ?? 'silent' }))
  } catch (err) {
    await dir.remove()
    throw err
  }
  const catalog = daemon.catalog
  const admin = daemon.admin.address()
  const n: Node = {
    daemon,
    dataDir: dir.path,
    admin,
    async deploy(app, extra = '') {
      await catalog.deployApp(parseAppConfigText(`app = "${app}"
primary_region = "ams"
[[services]]
  internal_port = ${port}
  protocol = "tcp"
  auto_start_machines = true
${extra}  [services.concurrency]
    type = "requests"
    soft_limit = 20
  [[services.ports]]
    port = 80
    handlers = ["http"]
  [[services.http_checks]]
    path = "/healthz"
    interval = "1s"
    timeout = "1s"
    grace_period = "0s"
`).config)
      await daemon.proxy!.whenApplied(catalog.lastSeq)
    },
    async machine(app, desired = 'started', cmd = [process.execPath, fixture]) {
      const m = await catalog.createMachine({ app, region: 'ams', node: 'ams-1', desired, spec: { cmd, env: {} } })
      const settled = await waitFor(() => {
        const now = catalog.getMachine(m.id)
        return now !== undefined && (desired === 'started' ? now.state === 'started' && now.ready : now.state === 'stopped') ? now : undefined
      }, { timeoutMs: 15_000, what: `Machine ${m.id} ${desired}` })
      await daemon.proxy!.whenApplied(catalog.lastSeq)
      return settled
    },
    async flycast(app) {
      const res = await request(`http://${admin}/v1/apps/${app}/flycast`, { method: 'POST' })
      const body = await res.body.json() as { address: string; allocated: boolean }
      await daemon.proxy!.whenApplied(catalog.lastSeq)
      // the worker rewrites the hosts file after the event: Machines read it at each lookup
      await waitFor(async () => (await readFile(flycastHostsPath(dir.path), 'utf8')).includes(`${body.address}\t${app}.flycast\n`), { what: `${app}.flycast in the hosts file` })
      return { status: res.statusCode, ...body }
    },
    async get(app, path) {
      const res = await request(`http://127.0.0.1:${daemon.proxy!.boundPort(80)}${path}`, { headers: { host: `${app}.localhost` }, headersTimeout: 30_000 })
      return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
    },
    async stop() {
      await daemon.stop()
      await dir.remove()
    },
  }
  return n
}

interface Called { resolved?: string; status?: number; error?: string; body?: string }
interface Served { app: string; machine: string; path: string; headers: Record<string, string> }

test('a Machine resolves <app>.flycast through $FLY_FLYCAST_HOSTS and reaches the app through the proxy', async () => {
  node = await startNode()
  await node.deploy('web')
  await node.deploy('client')
  const webMachines = [await node.machine('web'), await node.machine('web')]
  await node.machine('client')

  const first = await node.flycast('web')
  expect(first.status).toBe(201)
  expect(first.allocated).toBe(true)
  expect(first.address).toMatch(/^127\.78\.\d+\.\d+$/)
  const again = await node.flycast('web')
  expect(again).toMatchObject({ status: 200, allocated: false, address: first.address })

  const port = node.daemon.proxy!.flycastPort('web', 80)!
  const seen = new Set<string>()
  for (let i = 0; i < 6; i++) {
    const res = await node.get('client', `/call?name=web.flycast&port=${port}&path=/hello`)
    expect(res.status).toBe(200)
    const called = JSON.parse(res.text) as Called
    expect(called.resolved).toBe(first.address)
    expect(called.status).toBe(200)
    const served = JSON.parse(called.body!) as Served
    expect(served.app).toBe('web')
    expect(served.path).toBe('/hello')
    // it went through the proxy (balancing, forwarding headers), not straight to a Machine
    expect(served.headers['fly-forwarded-port']).toBe(String(port))
    expect(served.headers['x-forwarded-port']).toBe('80')
    seen.add(served.machine)
  }
  expect(seen).toEqual(new Set(webMachines.map((m) => m.id)))
})

test('a Flycast name is refused on the public listener, and its listener is not on the public address', async () => {
  node = await startNode()
  await node.deploy('web')
  await node.machine('web')
  const { address } = await node.flycast('web')
  const res = await request(`http://127.0.0.1:${node.daemon.proxy!.boundPort(80)}/`, { headers: { host: 'web.flycast' } })
  expect(res.statusCode).toBe(403)
  expect(res.headers['edgeproxy-error']).toBe('EP_FLYCAST_ONLY')
  await res.body.text()
  const port = node.daemon.proxy!.flycastPort('web', 80)!
  await expect(request(`http://127.0.0.1:${port}/`, { headers: { host: 'web.flycast' } })).rejects.toMatchObject({ code: 'ECONNREFUSED' })
  const direct = await request(`http://${address}:${port}/`, { headers: { host: 'web.flycast' } })
  expect(direct.statusCode).toBe(200)
  await direct.body.text()
})

test('autostart works through Flycast: a stopped Machine is started for a request from another Machine', async () => {
  node = await startNode()
  await node.deploy('lazy')
  await node.deploy('client')
  const lazy = await node.machine('lazy', 'stopped')
  await node.machine('client')
  await node.flycast('lazy')
  const port = node.daemon.proxy!.flycastPort('lazy', 80)!

  const res = await node.get('client', `/call?name=lazy.flycast&port=${port}&path=/wake`)
  const called = JSON.parse(res.text) as Called
  expect(called.status).toBe(200)
  expect((JSON.parse(called.body!) as Served).machine).toBe(lazy.id)
  expect(node.daemon.catalog.getMachine(lazy.id)!.desiredReason).toMatch(/^autostart: request /)
})

test('two apps given one address (two nodes allocating at once) are repaired: the first by name keeps it', async () => {
  node = await startNode()
  await node.deploy('web')
  await node.deploy('zeta')
  const { address } = await node.flycast('web')
  // what gossip would bring from a node that allocated the same address for another app meanwhile
  await node.daemon.catalog.setFlycast('zeta', address)
  const repaired = await waitFor(() => {
    const z = node!.daemon.catalog.getApp('zeta')?.flycast
    return z !== undefined && z !== address ? z : undefined
  }, { what: 'zeta to get a new Flycast address' })
  expect(node.daemon.catalog.getApp('web')!.flycast).toBe(address)
  const hosts = await waitFor(async () => {
    const text = await readFile(flycastHostsPath(node!.dataDir), 'utf8')
    return text.includes(`${repaired}\tzeta.flycast`) ? text : undefined
  }, { what: 'the hosts file to list the new address' })
  expect(hosts).toContain(`${address}\tweb.flycast\n`)
})

test('`edgeproxy apps flycast APP` allocates through the admin API and says where the name points', async () => {
  node = await startNode()
  await node.deploy('api')
  const made = await runCli(['--api', `http://${node.admin}`, 'apps', 'flycast', 'api'])
  expect(made.code).toBe(0)
  const address = node.daemon.catalog.getApp('api')!.flycast!
  expect(made.stdout).toContain(`api.flycast → ${address} (allocated from 127.78.`)
  expect(made.stdout).toContain('ports 80')
  const json = await runCli(['--api', `http://${node.admin}`, '--json', 'apps', 'flycast', 'api'])
  expect(JSON.parse(json.stdout)).toMatchObject({ app: 'api', name: 'api.flycast', address, allocated: false, ports: [80] })
  const missing = await runCli(['--api', `http://${node.admin}`, 'apps', 'flycast', 'nope'])
  expect(missing.code).not.toBe(0)
  expect(missing.stderr).toContain('EP_APP_NOT_FOUND')
})

test('the demo app calls another app by its Flycast name, and asks for a replay with ?fly-replay=', async () => {
  node = await startNode()
  await node.deploy('hello')
  const demo = [await node.machine('hello', 'started', demoAppCommand()), await node.machine('hello', 'started', demoAppCommand())]
  const { address } = await node.flycast('hello')
  const port = node.daemon.proxy!.flycastPort('hello', 80)!

  const called = await node.get('hello', `/flycast?url=${encodeURIComponent(`http://hello.flycast:${port}/inner`)}`)
  expect(called.status).toBe(200)
  const outer = JSON.parse(called.text) as { via: string; status: number; body: string }
  expect(outer).toMatchObject({ via: address, status: 200 })
  expect((JSON.parse(outer.body) as { app: string; path: string }).path).toBe('/inner')

  for (let i = 0; i < 4; i++) {
    const replayed = await node.get('hello', '/?fly-replay=elsewhere=true;state=demo')
    const body = JSON.parse(replayed.text) as { machine: string; headers: Record<string, string> }
    const from = /instance=([0-9a-f]{14})/.exec(body.headers['fly-replay-src'])?.[1]
    expect(demo.map((m) => m.id)).toContain(from)
    expect(body.machine).not.toBe(from) // elsewhere: the other Machine served it
    expect(body.headers['fly-replay-src']).toContain(';state=demo')
  }
})
