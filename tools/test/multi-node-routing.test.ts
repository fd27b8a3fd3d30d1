import { once } from 'node:events'
import { rm, writeFile } from 'node:fs/promises'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { createFleetCa } from '../pki/fleet-ca.js'
import { issueNodeCert } from '../pki/node-cert.js'
import { json, MultiNodeFleet } from './multi-node-harness.js'

/**
 * Issue 7 across real daemons: ams-1 (edge + worker), iad-1 and syd-1 (workers only), lhr-1 (edge only),
 * each a child process, joined by gossip through chaos relays that give the regions their distances
 * (ams–iad 40 ms, ams–syd 120 ms, iad–syd 100 ms, lhr–ams 10 ms …). App `web` has one Machine per worker.
 */
const RTT: Array<[string, string, number]> = [
  ['ams-1', 'iad-1', 40], ['ams-1', 'syd-1', 120], ['iad-1', 'syd-1', 100],
  ['lhr-1', 'ams-1', 10], ['lhr-1', 'iad-1', 40], ['lhr-1', 'syd-1', 130],
]
const fleet = new MultiNodeFleet({ heartbeatMs: 200, downAfterMs: 2000, rtt: RTT })
const machines: Record<string, MachineRecord> = {}
const sick = (region: string): string => join(fleet.dir.path, `sick-${region}`)
const insecure = new Agent({ connect: { rejectUnauthorized: false, servername: 'web.localhost' } })

const WEB = `app = "web"
primary_region = "ams"
[env]
ECHO_PORT = "7070"
PROXY_PORT = "7171"

[[services]]
internal_port = 8080
protocol = "tcp"
[services.concurrency]
type = "requests"
soft_limit = 1
hard_limit = 2
[[services.ports]]
port = 80
handlers = ["http"]
[[services.ports]]
port = 443
handlers = ["tls", "http"]
[[services.http_checks]]
path = "/healthz"
interval = "200ms"
timeout = "1s"
grace_period = "0s"

[[services]]
internal_port = 7070
protocol = "tcp"
[[services.ports]]
port = 7000

[[services]]
internal_port = 7171
protocol = "tcp"
[[services.ports]]
port = 7001
handlers = ["proxy_proto"]
`

beforeAll(async () => {
  await fleet.init()
  await fleet.start('ams-1', 'ams', 'edge,worker')
  await Promise.all([fleet.start('iad-1', 'iad', 'worker'), fleet.start('syd-1', 'syd', 'worker'), fleet.start('lhr-1', 'lhr', 'edge')])
  await fleet.deploy('ams-1', WEB)
  for (const [node, region] of [['ams-1', 'ams'], ['iad-1', 'iad'], ['syd-1', 'syd']]) {
    await waitFor(() => json<unknown[]>(`${fleet.node(node).api}/v1/apps`).then((a) => a.length > 0), { timeoutMs: 15_000, what: `the app on ${node}` })
    machines[region] = await fleet.machine(node, 'web', { SICK_FILE: sick(region) })
  }
  // iad has two: when its node dies, a retry must leave the node, not just the Machine
  machines.iad2 = await fleet.machine('iad-1', 'web', { SICK_FILE: sick('iad') })
  for (const edge of ['ams-1', 'lhr-1']) {
    for (const m of Object.values(machines)) await fleet.waitMachine(edge, m.id, (x) => x.state === 'started' && x.ready && Object.values(x.checks).every((c) => c === 'passing'), 'started and passing')
  }
  // the relays' delay plus under 80 ms of a busy box: ams–syd then reads below the great-circle table's 251 ms,
  // which the closeness test below tells measured RTT from
  await fleet.waitRtts('ams-1', { 'iad-1': [35, 120], 'syd-1': [100, 200] })
  await fleet.waitRtts('lhr-1', { 'ams-1': [8, 90], 'iad-1': [35, 120], 'syd-1': [100, 210] })
}, 120_000)

afterAll(async () => {
  await insecure.close()
  await fleet.stopAll()
}, 60_000)

async function get(edge: string, path = '/', method = 'GET'): Promise<{ status: number; body: Record<string, unknown>; code?: string }> {
  const port = await fleet.node(edge).publicPort(80)
  const res = await request(`http://127.0.0.1:${port}${path}`, { method, headers: { host: 'web.localhost' } })
  const text = await res.body.text()
  const code = res.headers['edgeproxy-error'] as string | undefined
  return { status: res.statusCode, body: code === undefined ? JSON.parse(text) as Record<string, unknown> : { text }, code }
}

async function regionOf(edge: string): Promise<unknown> {
  return (await get(edge)).body.region
}

/** Routing follows the catalog a few hundred ms behind (FLY-SPEC §1): wait until every answer comes from `region`. */
async function routesTo(edge: string, region: string, what: string): Promise<void> {
  await waitFor(async () => {
    for (let i = 0; i < 3; i++) if (await regionOf(edge) !== region) return false
    return true
  }, { timeoutMs: 15_000, intervalMs: 100, what })
}

test('a request at the ams edge goes to the ams Machine, over every handler', async () => {
  for (let i = 0; i < 5; i++) {
    const r = await get('ams-1')
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ app: 'web', region: 'ams', machine: machines.ams.id })
    expect((r.body.headers as Record<string, string>)['fly-region']).toBe('ams')
  }
  const tls = await request(`https://127.0.0.1:${await fleet.node('ams-1').publicPort(443)}/`, { headers: { host: 'web.localhost' }, dispatcher: insecure })
  expect(await tls.body.json()).toMatchObject({ region: 'ams', headers: { 'x-forwarded-proto': 'https' } })
})

test('closeness is the RTT gossip measured through the relays, not the static region table', async () => {
  const measured = async (): Promise<Record<string, number>> => Object.fromEntries((await fleet.nodesSeenBy('ams-1')).map((n) => [n.name, n.rttMs ?? NaN]))
  const before = await measured()
  const explained = await json<{ candidates: Array<{ region: string; rttMs: number }>; choice: { region: string } }>(
    `${fleet.node('ams-1').api}/v1/route/explain?host=web.localhost&port=80`)
  const after = await measured()
  expect([...new Set(explained.candidates.map((c) => c.region))]).toEqual(['ams', 'iad', 'syd'])
  expect(explained.choice.region).toBe('ams')
  const rtt = Object.fromEntries(explained.candidates.map((c) => [c.region, c.rttMs]))
  // routing uses gossip's smoothed ping RTT (the same number /v1/nodes shows; a ping may land in between)
  const same = (region: string, node: string): boolean => [before[node], after[node]].some((m) => Math.abs(rtt[region] - m) <= 1)
  expect(same('iad', 'iad-1')).toBe(true)
  expect(same('syd', 'syd-1')).toBe(true)
  // that is the relays' 40 and 120 ms, not loopback's ~0 nor the table's great-circle 94 and 251 ms
  expect(rtt.iad).toBeGreaterThanOrEqual(35)
  expect(rtt.syd).toBeGreaterThanOrEqual(100)
  expect(rtt.syd).toBeLessThan(200)
})

test('soft_limit keeps traffic in ams; only a Machine at hard_limit sends the next request across to iad', async () => {
  const slow = [get('ams-1', '/slow?ms=1500')]
  await waitFor(async () => (await json<{ candidates: Array<{ region: string; load: number }> }>(`${fleet.node('ams-1').api}/v1/route/explain?host=web.localhost`)).candidates.find((c) => c.region === 'ams')?.load === 1, { what: 'one request in flight at ams' })
  expect(await regionOf('ams-1')).toBe('ams') // T1 in the closest region beats T0 across the ocean (FLY-SPEC §3)
  slow.push(get('ams-1', '/slow?ms=1500'))
  await waitFor(async () => (await json<{ candidates: Array<{ region: string; load: number }> }>(`${fleet.node('ams-1').api}/v1/route/explain?host=web.localhost`)).candidates.find((c) => c.region === 'ams')?.load === 2, { what: 'ams at its hard_limit' })
  expect(await regionOf('ams-1')).toBe('iad')
  for (const r of await Promise.all(slow)) expect(r.body.region).toBe('ams')
  expect(await regionOf('ams-1')).toBe('ams')
})

test('when the ams Machine fails its check, ams traffic goes to iad — http, tls, raw TCP and proxy_proto over the backhaul', async () => {
  await writeFile(sick('ams'), '')
  try {
    await routesTo('ams-1', 'iad', 'the ams edge routing to iad')
    const r = await get('ams-1', '/over?x=1', 'POST')
    expect(r.body).toMatchObject({ region: 'iad', method: 'POST', path: '/over?x=1' })
    expect([machines.iad.id, machines.iad2.id]).toContain(r.body.machine)
    // the forwarding headers are the edge's, as for a local Machine
    const headers = r.body.headers as Record<string, string>
    expect(headers).toMatchObject({ 'fly-region': 'ams', 'fly-client-ip': '127.0.0.1', 'x-forwarded-proto': 'http' })

    const tls = await request(`https://127.0.0.1:${await fleet.node('ams-1').publicPort(443)}/`, { headers: { host: 'web.localhost' }, dispatcher: insecure })
    expect(await tls.body.json()).toMatchObject({ region: 'iad', headers: { 'x-forwarded-proto': 'https', 'fly-region': 'ams' } })

    // raw TCP, TLS-terminated on the edge (SNI names the app), to the iad Machine's echo port
    const echoPort = await fleet.node('ams-1').publicPort(7000)
    const echo = netConnect({ host: '127.0.0.1', port: echoPort })
    const chunks: Buffer[] = []
    echo.on('data', (c: Buffer) => chunks.push(c))
    echo.end('across the backhaul and back')
    await once(echo, 'close')
    expect(Buffer.concat(chunks).toString()).toBe('across the backhaul and back')

    // the PROXY header is written on iad by the worker, from the client the ams edge accepted
    const ppPort = await fleet.node('ams-1').publicPort(7001)
    const client = netConnect({ host: '127.0.0.1', port: ppPort, localAddress: '127.0.0.99' })
    let answer = ''
    client.on('data', (c: Buffer) => { answer += c.toString() })
    await once(client, 'connect')
    const clientPort = client.localPort
    await once(client, 'close')
    const seen = JSON.parse(answer) as { region: string; proxy: string }
    expect(seen.region).toBe('iad')
    expect(seen.proxy).toBe(`PROXY TCP4 127.0.0.99 127.0.0.1 ${clientPort} ${ppPort}`)

    // route explain says why
    const explained = await json<{ excluded: Array<{ machine: string; reason: string }>; choice: { region: string } }>(`${fleet.node('ams-1').api}/v1/route/explain?host=web.localhost`)
    expect(explained.excluded).toContainEqual({ machine: machines.ams.id, region: 'ams', reason: 'a health check is critical' })
    expect(explained.choice.region).toBe('iad')
  } finally {
    await rm(sick('ams'), { force: true })
  }
  await routesTo('ams-1', 'ams', 'the ams edge back on its own Machine')
})

test('a stopped ams Machine sends ams traffic to iad until it is started again', async () => {
  const stop = await request(`${fleet.node('ams-1').api}/v1/machines/${machines.ams.id}/stop`, { method: 'POST' })
  expect(stop.statusCode).toBe(200)
  await stop.body.dump()
  await routesTo('ams-1', 'iad', 'the ams edge routing to iad while its Machine is stopped')
  const start = await request(`${fleet.node('ams-1').api}/v1/machines/${machines.ams.id}/start`, { method: 'POST' })
  expect(start.statusCode).toBe(200)
  await start.body.dump()
  await fleet.waitMachine('ams-1', machines.ams.id, (x) => x.state === 'started' && x.ready, 'started again')
  await routesTo('ams-1', 'ams', 'the ams edge back on its own Machine')
})

test('an edge-only node runs no Machines and routes everything over the backhaul to the closest worker', async () => {
  const nodes = await fleet.nodesSeenBy('lhr-1')
  const lhr = nodes.find((n) => n.name === 'lhr-1')!
  expect(lhr.roles).toEqual(['edge'])
  expect(lhr.backhaul).toBeUndefined() // it accepts no backhaul: it hosts nothing
  for (const w of ['iad-1', 'syd-1']) expect(nodes.find((n) => n.name === w)?.backhaul).toMatch(/^127\.0\.\d+\.\d+:\d+$/)

  // the test before restarted the ams Machine and waited only for ams-1 to see it ready; lhr-1 learns that by
  // gossip a moment later (CI once routed the first request here to iad in that moment)
  await routesTo('lhr-1', 'ams', 'the lhr edge routing to the restarted ams Machine')
  for (let i = 0; i < 5; i++) expect(await get('lhr-1')).toMatchObject({ status: 200, body: { region: 'ams', headers: { 'fly-region': 'lhr' } } })
  const create = await request(`${fleet.node('lhr-1').api}/v1/apps/web/machines`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ node: 'lhr-1' }) })
  expect(create.statusCode).toBe(400)
  expect(await create.body.json()).toMatchObject({ message: expect.stringContaining('has no worker role') })
})

test('a worker\'s backhaul refuses a plain TCP client and a certificate from another CA', async () => {
  const addr = (await fleet.nodesSeenBy('ams-1')).find((n) => n.name === 'iad-1')!.backhaul!
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))]
  const open = Buffer.concat([Buffer.from([1, 0, 0, 0, 1]), Buffer.alloc(4)]) // an OPEN frame header, as a plain client would try

  const plain = netConnect({ host, port })
  let plainBytes = 0
  plain.on('data', (c: Buffer) => { if (c[0] !== 0x15) plainBytes += c.length }) // a TLS alert is all it may get
  plain.on('error', () => { /* the close is what counts */ })
  plain.write(open)
  await new Promise((r) => plain.once('close', r))
  expect(plainBytes).toBe(0)

  const otherCa = await createFleetCa()
  const foreign = await issueNodeCert(otherCa, 'ams-1') // the right name, the wrong CA
  const tls = tlsConnect({ host, port, servername: 'iad-1', ca: otherCa.certPem, cert: foreign.certPem, key: foreign.keyPem, ALPNProtocols: ['edgeproxy-backhaul/1'], rejectUnauthorized: false })
  let tlsBytes = 0
  tls.on('data', (c: Buffer) => { tlsBytes += c.length })
  tls.on('error', () => { /* refused: the close is what counts */ })
  tls.once('secureConnect', () => tls.write(open))
  await new Promise((r) => tls.once('close', r))
  expect(tlsBytes).toBe(0)

  // the fleet is untouched: the ams edge still reaches iad over the same backhaul
  expect((await get('ams-1')).status).toBe(200)
  expect(fleet.node('iad-1').daemon.logs()).toContain('backhaul handshake refused')
})

test('iad killed: the ams edge routes to syd at once (the dead node leaves routing on the first failed dial, its Machines within the heartbeat timeout), and no request fails', async () => {
  await writeFile(sick('ams'), '')
  try {
    await routesTo('ams-1', 'iad', 'ams traffic on iad')
    const downAfterMs = 2000
    await fleet.crash('iad-1')
    const killedAt = Date.now()
    const answers: Array<{ status: number; region: unknown; code?: string; at: number }> = []
    // idempotent and not: a connect that fails before anything was sent is retried on another Machine either way
    while (Date.now() - killedAt < downAfterMs + 2000) {
      const r = await get('ams-1', '/during', answers.length % 2 === 0 ? 'GET' : 'POST')
      answers.push({ status: r.status, region: r.body.region, code: r.code, at: Date.now() - killedAt })
    }
    expect(answers.filter((a) => a.status !== 200)).toEqual([])
    expect(answers.filter((a) => a.at > 200).every((a) => a.region === 'syd')).toBe(true)
    const explained = await json<{ excluded: Array<{ machine: string; reason: string }> }>(`${fleet.node('ams-1').api}/v1/route/explain?host=web.localhost`)
    for (const m of [machines.iad, machines.iad2]) expect(explained.excluded).toContainEqual({ machine: m.id, region: 'iad', reason: 'its node iad-1 is down' })
    // and gossip, on its own clock, has timed the node out (the heartbeat timeout is 2 s here)
    expect((await fleet.nodesSeenBy('ams-1')).find((n) => n.name === 'iad-1')?.up).toBe(false)
  } finally {
    await rm(sick('ams'), { force: true })
  }
}, 30_000)
