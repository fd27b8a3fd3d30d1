import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { Agent, request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { waitFor } from '../../test/helpers/wait-for.js'
import { type AutoscaleNode, httpAppToml, startAutoscaleNode } from './autoscale-harness.js'

let node: AutoscaleNode | undefined
let agent: Agent | undefined
afterEach(async () => {
  await agent?.close()
  agent = undefined
  await node?.stop()
  node = undefined
})

interface Answer { status: number; machine?: string; early?: number; requestId?: string; error?: string }

/** `n` requests at once, each on its own connection, as n clients would send them. */
async function burst(url: string, app: string, n: number): Promise<Answer[]> {
  agent = new Agent({ connections: n, pipelining: 0 })
  return Promise.all(Array.from({ length: n }, async () => {
    const res = await request(url, { dispatcher: agent, headers: { host: `${app}.localhost` }, headersTimeout: 40_000, bodyTimeout: 40_000 })
    const text = await res.body.text()
    const requestId = res.headers['fly-request-id'] as string | undefined
    if (res.statusCode !== 200) return { status: res.statusCode, requestId, error: `${res.headers['edgeproxy-error'] as string}: ${text}` }
    const body = JSON.parse(text) as { machine: string; early: number }
    return { status: 200, machine: body.machine, early: body.early, requestId }
  }))
}

const autostarted = (n: AutoscaleNode, app: string) => n.daemon.catalog.listMachines({ app }).filter((m) => m.desiredReason.startsWith('autostart: request '))

test('100 concurrent requests to an app scaled to zero start exactly one Machine when its hard_limit covers them, and all succeed', async () => {
  node = await startAutoscaleNode()
  await node.deploy(httpAppToml('burst', { soft: 20, hard: 100 }))
  // the port opens 800 ms before the app is ready: every request arrives, and is held, before the first passing check
  await node.machines('burst', 3, { env: { READY_AFTER_MS: '800' } })

  const answers = await burst(node.url(80), 'burst', 100)

  expect(answers.filter((a) => a.status !== 200)).toEqual([])
  const started = autostarted(node, 'burst')
  expect(started).toHaveLength(1)
  expect(new Set(answers.map((a) => a.machine))).toEqual(new Set([started[0].id]))
  expect(answers.every((a) => a.early === 0)).toBe(true)
  // the reason names one of the requests that asked for it
  expect(answers.map((a) => a.requestId)).toContain(started[0].desiredReason.slice('autostart: request '.length))
  expect(node.daemon.catalog.listMachines({ app: 'burst' }).filter((m) => m.state === 'started')).toHaveLength(1)
})

test('100 concurrent requests start as many Machines as their hard_limit needs (3 for hard_limit 40), and all succeed', async () => {
  node = await startAutoscaleNode()
  await node.deploy(httpAppToml('needs', { soft: 20, hard: 40 }))
  await node.machines('needs', 5, { env: { READY_AFTER_MS: '800' } })

  const answers = await burst(node.url(80), 'needs', 100)

  expect(answers.filter((a) => a.status !== 200)).toEqual([])
  expect(autostarted(node, 'needs')).toHaveLength(3)
  expect(node.autoscale().autostart?.starts).toBe(3)
})

test('a Machine that opens its port 1 s before it is healthy never gets a request early', async () => {
  node = await startAutoscaleNode()
  await node.deploy(httpAppToml('cold', { soft: 20, hard: 50 }))
  const [m] = await node.machines('cold', 1, { env: { READY_AFTER_MS: '1000' } })
  const began = Date.now()

  const answers = await burst(node.url(80), 'cold', 20)

  expect(answers.filter((a) => a.status !== 200)).toEqual([])
  expect(answers.every((a) => a.machine === m.id && a.early === 0)).toBe(true)
  expect(Date.now() - began).toBeGreaterThanOrEqual(1000)
})

test('a connection refused by a Machine woken moments ago is retried instead of failing the request', async () => {
  node = await startAutoscaleNode()
  // the app answers its first passing check, then rebinds: closed for 300 ms right as it becomes ready
  await node.deploy(httpAppToml('flappy'))
  const [m] = await node.machines('flappy', 1, { env: { REBIND_ONCE_MS: '300' } })

  const res = await request(node.url(80), { headers: { host: 'flappy.localhost' } })

  expect(res.statusCode).toBe(200)
  expect(((await res.body.json()) as { machine: string }).machine).toBe(m.id)
  expect(node.autoscale().autostart?.wakeRetries).toBeGreaterThan(0)
})

test('a request whose Machine does not become ready in time gets 503 EP_AUTOSTART_TIMEOUT naming the Machine', async () => {
  node = await startAutoscaleNode({ wakeTimeoutMs: 800 })
  await node.deploy(httpAppToml('slowboot'))
  const [m] = await node.machines('slowboot', 1, { env: { READY_AFTER_MS: '60000' } })

  const res = await request(node.url(80), { headers: { host: 'slowboot.localhost' } })

  expect(res.statusCode).toBe(503)
  expect(res.headers['edgeproxy-error']).toBe('EP_AUTOSTART_TIMEOUT')
  expect(await res.body.text()).toContain(`Machine ${m.id} was started for this request but did not become ready`)
})

test('an app with auto_start_machines = false does not start anything: 503 EP_NO_HEALTHY_MACHINE', async () => {
  node = await startAutoscaleNode()
  await node.deploy(httpAppToml('manual').replace('auto_start_machines = true', 'auto_start_machines = false'))
  await node.machines('manual', 1)

  const res = await request(node.url(80), { headers: { host: 'manual.localhost' } })

  expect(res.statusCode).toBe(503)
  expect(res.headers['edgeproxy-error']).toBe('EP_NO_HEALTHY_MACHINE')
  await res.body.dump()
  expect(autostarted(node, 'manual')).toHaveLength(0)
})

// ---- every handler: raw TCP, proxy_proto, tls, pg_tls ----

const TCP_APPS = {
  raw: { port: 10001, handlers: '[]' },
  pp: { port: 10002, handlers: '["proxy_proto"]' },
  tlsapp: { port: 10003, handlers: '["tls"]' },
  pg: { port: 5432, handlers: '["pg_tls"]' },
} as const

function tcpAppToml(app: keyof typeof TCP_APPS): string {
  const { port, handlers } = TCP_APPS[app]
  const tls = handlers.includes('tls') ? '\n  [services.ports.tls_options]\n    default_self_signed = true\n' : '\n'
  return `app = "${app}"\nprimary_region = "ams"\n\n[[services]]\n  internal_port = INTERNAL_PORT\n  protocol = "tcp"\n  [[services.ports]]\n    port = ${port}\n    handlers = ${handlers}${tls}`
}

/** Writes `hello`, resolves with what came back once it ends with it (the fixture echoes after its id). */
function echo(socket: Socket | import('node:tls').TLSSocket, send = 'hello'): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no echo within 20 s; got ${JSON.stringify(got)}`)) }, 20_000)
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (got.endsWith(send)) { clearTimeout(timer); socket.destroy(); resolve(got) }
    })
    socket.on('error', (err) => { clearTimeout(timer); reject(err) })
    socket.on('close', () => { clearTimeout(timer); reject(new Error(`closed; got ${JSON.stringify(got)}`)) })
    socket.write(send)
  })
}

function tcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port }, () => resolve(s))
    s.once('error', reject)
  })
}

async function pgTls(port: number, servername: string): Promise<import('node:tls').TLSSocket> {
  const s = await tcp(port)
  const sslRequest = Buffer.alloc(8)
  sslRequest.writeInt32BE(8, 0)
  sslRequest.writeInt32BE(80877103, 4)
  s.write(sslRequest)
  const answer = await new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString('latin1'))))
  expect(answer).toBe('S')
  return new Promise((resolve, reject) => {
    const t = tlsConnect({ socket: s, servername, rejectUnauthorized: false }, () => resolve(t))
    t.once('error', reject)
  })
}

test('autostart works for every handler: raw TCP, proxy_proto, tls and pg_tls connections wake their app', async () => {
  node = await startAutoscaleNode()
  const n = node
  const ids: Record<string, string> = {}
  for (const app of Object.keys(TCP_APPS) as Array<keyof typeof TCP_APPS>) {
    await n.deploy(tcpAppToml(app))
    ids[app] = (await n.machines(app, 1, { env: { MODE: 'tcp' } }))[0].id
  }

  const [raw, pp, tls, pg] = await Promise.all([
    tcp(n.publicPort(10001)).then((s) => echo(s)),
    tcp(n.publicPort(10002)).then((s) => echo(s)),
    new Promise<import('node:tls').TLSSocket>((resolve, reject) => {
      const t = tlsConnect({ host: '127.0.0.1', port: n.publicPort(10003), servername: 'tlsapp.localhost', rejectUnauthorized: false }, () => resolve(t))
      t.once('error', reject)
    }).then((s) => echo(s)),
    pgTls(n.publicPort(5432), 'pg.localhost').then((s) => echo(s)),
  ])

  expect(raw).toBe(`${ids.raw}:hello`)
  expect(pp).toMatch(new RegExp(`^${ids.pp}:PROXY TCP4 127\\.0\\.0\\.1 127\\.0\\.0\\.1 \\d+ \\d+\\r\\nhello$`))
  expect(tls).toBe(`${ids.tlsapp}:hello`)
  expect(pg).toBe(`${ids.pg}:hello`)
  for (const app of Object.keys(TCP_APPS)) expect(autostarted(n, app).map((m) => m.id)).toEqual([ids[app]])
})

test('a busy region gets one more Machine for what follows: a request past soft_limit is served now and starts a stopped sibling', async () => {
  node = await startAutoscaleNode()
  const n = node
  await n.deploy(httpAppToml('grow', { soft: 1, hard: 10 }))
  const [running] = await n.machines('grow', 1, { desired: 'started' })
  const [spare] = await n.machines('grow', 1)
  const slow = request(n.url(80, '/slow?ms=1500'), { headers: { host: 'grow.localhost' } })
  await waitFor(() => n.daemon.proxy!.stats.requests >= 1, { what: 'the slow request routed' })

  const res = await request(n.url(80), { headers: { host: 'grow.localhost' } })

  expect(res.statusCode).toBe(200)
  expect(((await res.body.json()) as { machine: string }).machine).toBe(running.id) // not held: it had room under hard_limit
  const woke = await n.waitMachine(spare.id, (m) => m.state === 'started' && m.ready, 'started for the busy region')
  expect(woke.stateReason).toBe(`autostart: request ${res.headers['fly-request-id'] as string}`)
  expect((await slow).statusCode).toBe(200)
})

test('a Machine that fails to start fails the requests held for it with 503 EP_AUTOSTART_FAILED, not a timeout', async () => {
  node = await startAutoscaleNode({ wakeTimeoutMs: 20_000 })
  const n = node
  await n.deploy(httpAppToml('broken'))
  const m = await n.daemon.catalog.createMachine({ app: 'broken', region: 'ams', node: 'ams-1', desired: 'stopped', spec: { cmd: ['/nonexistent/app'], env: {} } })
  await n.waitMachine(m.id, (x) => x.state === 'stopped', 'stopped')
  await n.daemon.proxy!.whenApplied(n.daemon.catalog.lastSeq)
  const began = Date.now()

  const res = await request(n.url(80), { headers: { host: 'broken.localhost' } })

  expect(res.statusCode).toBe(503)
  expect(res.headers['edgeproxy-error']).toBe('EP_AUTOSTART_FAILED')
  expect(await res.body.text()).toContain(`Machine ${m.id} failed to start; see \`edgeproxy machines logs ${m.id}\``)
  expect(Date.now() - began).toBeLessThan(10_000)
})
