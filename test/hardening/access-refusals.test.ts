import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { connect as netConnect, type Socket } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import { request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { CHANGES_TOPIC } from '../../gossip/broadcast.js'
import { generateFleetKey, readFleetKey } from '../../gossip/fleet-key.js'
import { partOptions } from '../../gossip/gossip-options.js'
import { HandshakeWatch } from '../../gossip/handshake-watch.js'
import { createGossipLibp2p } from '../../gossip/libp2p-node.js'
import { HEARTBEAT_TOPIC } from '../../gossip/membership.js'
import { controlFrame, F_DATA, F_OPEN, F_OPEN_OK, HEADER_BYTES } from '../../proxy/backhaul/frames.js'
import { BACKHAUL_ALPN } from '../../schemas/backhaul.js'
import type { MachineRecord, NodeRecord } from '../../schemas/catalog-records.js'
import { FLEET_PUBLIC_PORTS, DaemonFleet, getJson, metric } from './helpers/daemon-fleet.js'
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait-for.js'
import { createFleetCa } from '../../tools/pki/fleet-ca.js'
import { issueNodeCert } from '../../tools/pki/node-cert.js'

/**
 * Issue 11 item 15, against real daemons:
 * - the admin API bound off loopback — on a veth pair to a network namespace made for this test, the only
 *   non-loopback network this machine may use — answers 401 EP_UNAUTHORIZED without or with a wrong bearer
 *   token (and does nothing), 200 with the right one, `/healthz` to anyone; bound there without a token file
 *   the daemon does not start;
 * - a libp2p peer without the fleet key, or with another fleet key, cannot connect to a fleet node (a peer
 *   with the right key, built the same way, can: the key is what stops the others); the node counts them;
 * - a plain TCP client, a TLS client without a certificate and one with a certificate from another CA are
 *   refused at a worker's backhaul port and never reach its Machine, which records every request it gets (a
 *   client with a fleet certificate, sending the same bytes, does reach it).
 */
const run = promisify(execFile)
const MACHINE = join(import.meta.dirname, 'fixtures', 'hard-machine.mjs')
const fleet = new DaemonFleet()
const webToml = 'app = "web"\nprimary_region = "iad"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n[[services.http_checks]]\npath = "/healthz"\ninterval = "2s"\ntimeout = "2s"\ngrace_period = "0s"\n'
let machine: MachineRecord

beforeAll(async () => {
  await fleet.init()
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge', extra: ['--no-fsync'] })
  await fleet.start({ name: 'iad-1', region: 'iad', roles: 'worker', extra: ['--no-fsync'] })
  await fleet.waitAllUp()
  await fleet.deploy('ams-1', webToml)
  const m = await fleet.machine('ams-1', 'web', { node: 'iad-1', cmd: [process.execPath, MACHINE] })
  machine = await fleet.waitMachine('ams-1', m.id, (x) => x.state === 'started' && x.ready, 'started and ready')
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

// ---- admin API off loopback ----

/** A network namespace joined to the host by a veth pair: host side .1, namespace side .2 of a /30. */
interface Netns { name: string; hostIp: string; remove(): Promise<void> }

async function createNetns(): Promise<Netns> {
  const id = `${process.pid % 100_000}${Math.floor(Math.random() * 100)}`
  const name = `epa${id}`
  const [hostIf, nsIf] = [`${name}h`, `${name}n`] // ≤ 15 characters
  const net = `10.213.${process.pid % 250}`
  const remove = async (): Promise<void> => {
    await run('ip', ['link', 'del', hostIf]).catch(() => undefined) // takes its peer with it
    await run('ip', ['netns', 'del', name]).catch(() => undefined)
  }
  try {
    await run('ip', ['netns', 'add', name])
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf])
    await run('ip', ['link', 'set', nsIf, 'netns', name])
    await run('ip', ['addr', 'add', `${net}.1/30`, 'dev', hostIf])
    await run('ip', ['link', 'set', hostIf, 'up'])
    await run('ip', ['netns', 'exec', name, 'ip', 'addr', 'add', `${net}.2/30`, 'dev', nsIf])
    await run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', nsIf, 'up'])
    await run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up'])
  } catch (err) {
    await remove()
    throw new Error(`cannot make a network namespace for the off-loopback test (root and iproute2 needed): ${(err as Error).message}`)
  }
  return { name, hostIp: `${net}.1`, remove }
}

/** curl from inside the namespace: status and body. */
async function curlFrom(ns: Netns, method: string, url: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string }> {
  const args = ['netns', 'exec', ns.name, 'curl', '-sS', '-m', '10', '-X', method, '-o', '-', '-w', '\n%{http_code}', url]
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`)
  if (body !== undefined) args.push('--data-binary', body)
  const { stdout } = await run('ip', args, { timeout: 20_000 })
  const i = stdout.lastIndexOf('\n')
  return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) }
}

function loneDaemonArgs(dataDir: string, admin: string): string[] {
  return ['daemon', '--name', 'lone-1', '--region', 'ams', '--roles', 'edge,worker', '--data-dir', dataDir, '--admin', admin,
    '--machine-range', `127.70.${250 + (process.pid % 5)}.0/24`, '--port-map', FLEET_PUBLIC_PORTS.map((p) => `${p}=0`).join(','), '--no-fsync']
}

test('admin API off loopback: 401 EP_UNAUTHORIZED without or with a wrong token (and nothing done), 200 with it, /healthz open; no token file, no start', async () => {
  const ns = await createNetns()
  let daemon: DaemonProcess | undefined
  try {
    const token = randomUUID()
    const tokenFile = join(fleet.dir.path, 'admin.token')
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 })

    // without a token file the daemon refuses that address and exits, saying what to do
    const refused = await runCli(loneDaemonArgs(join(fleet.dir.path, 'lone-refused'), `${ns.hostIp}:0`), { timeoutMs: 30_000 })
    expect(refused.code).not.toBe(0)
    expect(refused.code).not.toBeNull()
    expect(refused.stdout + refused.stderr).toContain(`the admin API on ${ns.hostIp} would be reachable from the network without a token`)
    expect(refused.stdout + refused.stderr).toContain('--admin-token-file')
    expect(refused.stdout + refused.stderr).not.toContain('"node started"')

    daemon = await startDaemonProcess([...loneDaemonArgs(join(fleet.dir.path, 'lone'), `${ns.hostIp}:0`), '--admin-token-file', tokenFile], { timeoutMs: 30_000 })
    expect(daemon.admin.startsWith(`${ns.hostIp}:`)).toBe(true)
    const api = daemon.api

    // the namespace is another host on that link: it reaches the API only through the veth
    const health = await curlFrom(ns, 'GET', `${api}/healthz`)
    expect(health.status).toBe(200)
    expect(JSON.parse(health.body)).toMatchObject({ ok: true, node: 'lone-1' })

    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: token }, { authorization: `Basic ${token}` }, { authorization: `Bearer ${token}x` }]) {
      for (const path of ['/v1/apps', '/v1/nodes', '/v1/catalog', '/metrics']) {
        const res = await curlFrom(ns, 'GET', `${api}${path}`, headers)
        expect({ path, headers, status: res.status }).toEqual({ path, headers, status: 401 })
        expect(JSON.parse(res.body)).toMatchObject({ code: 'EP_UNAUTHORIZED' })
      }
      // a write without the token is refused and changes nothing
      const put = await curlFrom(ns, 'PUT', `${api}/v1/apps/evil`, { ...headers, 'content-type': 'text/plain' }, 'app = "evil"\n')
      expect(put.status).toBe(401)
      expect(JSON.parse(put.body)).toMatchObject({ code: 'EP_UNAUTHORIZED' })
    }

    const auth = { authorization: `Bearer ${token}` }
    const apps = await curlFrom(ns, 'GET', `${api}/v1/apps`, auth)
    expect(apps.status).toBe(200)
    expect(JSON.stringify(JSON.parse(apps.body))).not.toContain('evil')
    const put = await curlFrom(ns, 'PUT', `${api}/v1/apps/good`, { ...auth, 'content-type': 'text/plain' }, 'app = "good"\n')
    expect(put.status).toBe(201)
    const after = await curlFrom(ns, 'GET', `${api}/v1/apps`, auth)
    expect(after.status).toBe(200)
    expect(after.body).toContain('good')
    expect(after.body).not.toContain('evil')
    expect((await curlFrom(ns, 'GET', `${api}/metrics`, auth)).status).toBe(200)

    expect(await daemon.stop()).toBe(0)
    daemon = undefined
  } finally {
    await daemon?.kill()
    await ns.remove()
  }
  // nothing of the namespace is left behind
  const { stdout } = await run('ip', ['netns', 'list'])
  expect(stdout).not.toContain(ns.name)
}, 120_000)

// ---- gossip without the fleet key ----

async function gossipTarget(name: string): Promise<string> {
  const rec = (await getJson<NodeRecord[]>(`${fleet.node(name).api}/v1/nodes`)).find((n) => n.name === name)!
  return `${fleet.node(name).relay.multiaddr()}/p2p/${rec.peerId}`
}

/** A libp2p node of the same stack (TCP, Noise, Yamux) but no private network: no fleet key at all. */
async function keylessPeer(): Promise<Libp2p> {
  const node = await createLibp2p({
    start: false, privateKey: await generateKeyPair('Ed25519'), addresses: { listen: [] },
    transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()], services: { identify: identify() },
    connectionManager: { dialTimeout: 5000 },
  })
  await node.start()
  return node
}

/** A gossip node built exactly as a fleet member is (gossip-options.ts), with the given fleet key. */
async function keyedPeer(fleetKey: Uint8Array): Promise<Libp2p> {
  const honest = partOptions({ listen: [], bootstrap: [], dataDir: '/nonexistent', self: { region: 'ams', roles: ['edge'], version: 'intruder' }, ipColocationFactorWeight: 0 })
  const node = await createGossipLibp2p({
    ...honest.libp2p, dialTimeoutMs: 5000, privateKey: await generateKeyPair('Ed25519'), fleetKey,
    topics: [CHANGES_TOPIC, HEARTBEAT_TOPIC], handshakes: new HandshakeWatch(() => {}),
  })
  await node.start()
  return node
}

async function metricsOf(name: string): Promise<string> {
  const res = await request(`${fleet.node(name).api}/metrics`)
  return await res.body.text()
}

test('gossip: a peer without the fleet key, or with another one, is refused; a peer with the key is not; the fleet carries on and counts them', async () => {
  const target = await gossipTarget('ams-1')
  const failures0 = metric(await metricsOf('ams-1'), 'edgeproxy_gossip_handshake_failures_total')

  for (const [what, make] of [['no fleet key', keylessPeer], ['another fleet key', () => keyedPeer(generateFleetKey())]] as const) {
    const intruder = await make()
    try {
      const outcome = await intruder.dial(multiaddr(target)).then(() => 'connected', (err: Error) => `refused: ${err.name} ${err.message}`)
      expect(outcome, what).toMatch(/^refused: /)
      expect(intruder.getConnections(), what).toEqual([])
    } finally {
      await intruder.stop()
    }
  }
  // the node counted both, and says what the likely cause is
  await waitFor(async () => metric(await metricsOf('ams-1'), 'edgeproxy_gossip_handshake_failures_total') >= failures0 + 2, { timeoutMs: 10_000, what: 'ams-1 counting two refused handshakes' })
  expect(fleet.node('ams-1').daemon.logs()).toContain('a peer failed the private-network handshake')

  // the same code with the fleet's key gets in: the key, not the code, kept the others out
  const member = await keyedPeer(await readFleetKey(join(fleet.fleetDir, 'fleet.key')))
  try {
    await member.dial(multiaddr(target))
    expect(member.getConnections().length).toBeGreaterThanOrEqual(1)
  } finally {
    await member.stop()
  }

  // the fleet is untouched: both nodes up, still two of them, and a change made on one reaches the other
  await fleet.waitAllUp()
  for (const n of ['ams-1', 'iad-1']) expect((await getJson<NodeRecord[]>(`${fleet.node(n).api}/v1/nodes`)).map((x) => x.name).sort()).toEqual(['ams-1', 'iad-1'])
  await fleet.deploy('iad-1', 'app = "after-intruders"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n')
  await waitFor(async () => (await getJson<Array<{ name: string }>>(`${fleet.node('ams-1').api}/v1/apps`)).some((a) => a.name === 'after-intruders'), { timeoutMs: 15_000, what: 'the app deployed on iad-1 seen on ams-1' })
}, 120_000)

// ---- backhaul without a fleet certificate ----

interface BackhaulTry { openOk: boolean; response: string; frames: number; closed: boolean; error?: string }

/**
 * Speaks the backhaul to a worker over `socket`, as an edge would: OPEN for the Machine's service port, then
 * (on OPEN_OK) an HTTP request with `token` as a DATA frame; collects what comes back until the worker
 * closes or 10 s pass.
 */
async function tryBackhaul(socket: Socket, ready: 'connect' | 'secureConnect', token: string): Promise<BackhaulTry> {
  const out: BackhaulTry = { openOk: false, response: '', frames: 0, closed: false }
  const open = Buffer.from(JSON.stringify({ v: 1, machine: machine.id, port: 8080, edge: { node: 'ams-1', region: 'ams' } }))
  const http = Buffer.from(`GET /through-the-backhaul HTTP/1.1\r\nhost: web.localhost\r\nx-token: ${token}\r\nconnection: close\r\n\r\n`)
  let buf = Buffer.alloc(0)
  return await new Promise<BackhaulTry>((resolve) => {
    const timer = setTimeout(() => { socket.destroy(); resolve(out) }, 10_000)
    socket.once(ready, () => socket.write(controlFrame(F_OPEN, 1, open)))
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= HEADER_BYTES && buf.length >= HEADER_BYTES + buf.readUInt32BE(5)) {
        const [type, len] = [buf[0], buf.readUInt32BE(5)]
        const payload = buf.subarray(HEADER_BYTES, HEADER_BYTES + len)
        buf = buf.subarray(HEADER_BYTES + len)
        out.frames++
        if (type === F_OPEN_OK) { out.openOk = true; socket.write(controlFrame(F_DATA, 1, http)) }
        if (type === F_DATA) out.response += payload.toString('latin1')
        if (out.response.includes(token)) { clearTimeout(timer); socket.destroy(); resolve(out) }
      }
    })
    socket.on('error', (err: NodeJS.ErrnoException) => { out.error = err.code ?? err.message })
    socket.on('close', () => { out.closed = true; clearTimeout(timer); resolve(out) })
  })
}

async function served(): Promise<string[]> {
  const addr = machine.privateAddr!.includes(':') ? machine.privateAddr! : `${machine.privateAddr!}:8080`
  return await getJson<string[]>(`http://${addr}/__served`)
}

test('backhaul: plain TCP, TLS without a certificate and a certificate from another CA are refused and never reach the Machine; a fleet certificate does', async () => {
  const rec = (await getJson<NodeRecord[]>(`${fleet.node('ams-1').api}/v1/nodes`)).find((n) => n.name === 'iad-1')!
  const [host, port] = [rec.backhaul!.slice(0, rec.backhaul!.lastIndexOf(':')), Number(rec.backhaul!.slice(rec.backhaul!.lastIndexOf(':') + 1))]
  const refused0 = metric(await metricsOf('iad-1'), 'edgeproxy_backhaul_handshake_failures_total')
  const accepted0 = metric(await metricsOf('iad-1'), 'edgeproxy_backhaul_connections_accepted_total')
  expect(await served()).toEqual([]) // health checks carry no token: nothing recorded yet

  const otherCa = await createFleetCa()
  const foreign = await issueNodeCert(otherCa, 'ams-1') // the right name, the wrong CA
  const tlsBase = { host, port, servername: 'iad-1', ALPNProtocols: [BACKHAUL_ALPN], rejectUnauthorized: false }
  const attempts: Array<[string, () => Socket, 'connect' | 'secureConnect']> = [
    ['plain TCP', () => netConnect({ host, port }), 'connect'],
    ['TLS without a client certificate', () => tlsConnect(tlsBase), 'secureConnect'],
    ['TLS with a certificate from another CA', () => tlsConnect({ ...tlsBase, cert: foreign.certPem, key: foreign.keyPem }), 'secureConnect'],
  ]
  const tokens: string[] = []
  for (const [what, open, ready] of attempts) {
    const token = randomUUID()
    tokens.push(token)
    const r = await tryBackhaul(open(), ready, token)
    // closed by the worker, not by our timeout; not one frame, let alone OPEN_OK or an answer
    expect({ what, closed: r.closed, openOk: r.openOk, frames: r.frames, response: r.response }).toEqual({ what, closed: true, openOk: false, frames: 0, response: '' })
  }
  expect(await served()).toEqual([])
  const metrics = await metricsOf('iad-1')
  expect(metric(metrics, 'edgeproxy_backhaul_handshake_failures_total')).toBe(refused0 + 3)
  expect(metric(metrics, 'edgeproxy_backhaul_connections_accepted_total')).toBe(accepted0)
  expect(fleet.node('iad-1').daemon.logs()).toContain('backhaul handshake refused')

  // the same bytes with a certificate of the fleet CA (`edgeproxy fleet node-cert`) do reach the Machine
  const certDir = join(fleet.dir.path, 'certs')
  const issued = await runCli(['fleet', 'node-cert', '--name', 'ams-1', '--fleet', fleet.fleetDir, '--out', certDir])
  expect(issued.code).toBe(0)
  const [cert, key, ca] = await Promise.all([readFile(join(certDir, 'ams-1.crt'), 'utf8'), readFile(join(certDir, 'ams-1.key'), 'utf8'), readFile(join(fleet.fleetDir, 'ca.crt'), 'utf8')])
  const control = randomUUID()
  const ok = await tryBackhaul(tlsConnect({ ...tlsBase, rejectUnauthorized: true, ca, cert, key }), 'secureConnect', control)
  expect(ok.openOk).toBe(true)
  expect(ok.response).toMatch(/^HTTP\/1\.1 200 /)
  expect(await served()).toEqual([control])

  // and the fleet's own edge still reaches it over its backhaul
  const viaEdge = await request(`http://127.0.0.1:${await fleet.publicPort('ams-1', 80)}/via-edge`, { headers: { host: 'web.localhost', 'x-token': 'edge-token' } })
  expect(viaEdge.statusCode).toBe(200)
  await viaEdge.body.dump()
  expect(await served()).toEqual([control, 'edge-token'])
  for (const t of tokens) expect(await served()).not.toContain(t)
}, 120_000)
