import { createHash, randomBytes } from 'node:crypto'
import { connect as h2connect, type ClientHttp2Session } from 'node:http2'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { DaemonFleet, getJson, metric } from './helpers/daemon-fleet.js'

/**
 * Issue 11 item 13: fly-replay under load — every request answered exactly once. Two real daemons, ams-1
 * and iad-1 (both edge + worker), joined by gossip and the mTLS backhaul. App `web` has two Machines on each;
 * app `other` one on iad-1. Each Machine (helpers/c-replay-machine.mjs) keeps a journal of every request it
 * saw by the client's `x-req-id`: whether it asked for a replay or executed the request, and the body's hash.
 *
 * Sustained concurrent load enters ams-1 over HTTP/1.1 and HTTP/2, mixed GET and POST (bodies up to 256 KiB,
 * some replayed before the Machine read them), with a plan per request: answered where it lands, replayed to
 * region iad (header and JSON form), to one instance (local or across the backhaul), to app `other`,
 * `elsewhere=true`, to a region with no Machine and `fallback=prefer_self`, or to one busy instance with
 * `timeout=25ms;fallback=prefer_self` — a timeout that races the capacity queue and the connect (that instance
 * closes its connections every 3 answers, so the proxy keeps connecting to it). Meanwhile iad-1's own edge
 * loads the iad Machines directly. `hard_limit = 6` puts ams-1's requests and its replays into the capacity
 * queue, so queueing and replay interact.
 *
 * Asserted, per request: one 200 whose body is that request's (id and body hash), no fly-replay* header at
 * the client, executed by exactly one Machine of the right kind, asked for a replay at most once, and the
 * body intact wherever it arrived.
 */
const MACHINE = join(import.meta.dirname, 'helpers', 'c-replay-machine.mjs')
const H1_REQUESTS = Number(process.env.HARDENING_REPLAY_REQUESTS ?? 4000)
const H1_CONCURRENCY = 40
const H2_REQUESTS = Math.round(H1_REQUESTS / 3)
const H2_STREAMS = 16
const IAD_DIRECT_CONCURRENCY = 8
/** A replay timeout about as long as the wait for a busy Machine: the timeout races the queue and the connect. */
const RACE_TIMEOUT = '25ms'

const fleet = new DaemonFleet()
const machines: Record<'amsA' | 'amsB' | 'iadA' | 'iadB' | 'other', MachineRecord> = {} as never

const toml = (app: string): string => `app = "${app}"
primary_region = "ams"
[[services]]
internal_port = 8080
protocol = "tcp"
[services.concurrency]
type = "requests"
soft_limit = 4
hard_limit = 6
[[services.ports]]
port = 80
handlers = ["http"]
[[services.ports]]
port = 443
handlers = ["tls", "http"]
[[services.http_checks]]
path = "/healthz"
interval = "1s"
timeout = "2s"
grace_period = "0s"
`

beforeAll(async () => {
  await fleet.init()
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge,worker', extra: ['--no-fsync'] })
  await fleet.start({ name: 'iad-1', region: 'iad', roles: 'edge,worker', extra: ['--no-fsync'] })
  await fleet.waitAllUp()
  await fleet.deploy('ams-1', toml('web'))
  await fleet.deploy('ams-1', toml('other'))
  const cmd = [process.execPath, MACHINE]
  // the instance that timeout races aim at closes its connections often: its connects race the timeout all along
  const churn = { MAX_REQUESTS_PER_SOCKET: '3' }
  machines.amsA = await fleet.machine('ams-1', 'web', { node: 'ams-1', cmd })
  machines.amsB = await fleet.machine('ams-1', 'web', { node: 'ams-1', cmd })
  machines.iadA = await fleet.machine('ams-1', 'web', { node: 'iad-1', cmd })
  machines.iadB = await fleet.machine('ams-1', 'web', { node: 'iad-1', cmd, env: churn })
  machines.other = await fleet.machine('ams-1', 'other', { node: 'iad-1', cmd })
  // both edges must route to every Machine before the load starts
  for (const node of ['ams-1', 'iad-1']) {
    for (const [k, m] of Object.entries(machines)) {
      machines[k as keyof typeof machines] = await fleet.waitMachine(node, m.id, (x) => x.state === 'started' && x.ready && x.privateAddr !== undefined, 'started and ready', 60_000)
    }
  }
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

type Plan = 'self' | 'region' | 'json' | 'instance-local' | 'instance-remote' | 'app' | 'elsewhere' | 'fallback' | 'race'
const PLANS: Plan[] = ['self', 'region', 'region', 'json', 'instance-local', 'instance-remote', 'app', 'elsewhere', 'fallback', 'race']

interface Sent {
  id: string
  plan: Plan
  method: 'GET' | 'POST'
  body: Buffer | undefined
  sha: string
  early: boolean
  via: 'h1' | 'h2' | 'iad-direct'
}

interface Answer {
  id: string
  app: string
  machine: string
  region: string
  method: string
  bytes: number
  sha: string
  src?: string
  failed?: string
  transformed?: string
}

interface Received {
  sent: Sent
  status: number | undefined
  replayHeaders: string[]
  answer: Answer | undefined
  error: string | undefined
}

interface JournalEntry { id?: string; kind: 'asked' | 'executed'; early?: boolean; bytes?: number; sha?: string; src?: string; failed?: string }

const EMPTY_SHA = createHash('sha256').digest('hex')

/** Request `i` of a lane: a plan, a method and (for half of them) a body of 0–256 KiB. */
function makeRequest(lane: Sent['via'], i: number): Sent {
  const plan: Plan = lane === 'iad-direct' ? 'self' : PLANS[i % PLANS.length]
  const post = (i >> 1) % 2 === 0
  const size = !post ? 0 : i % 7 === 0 ? 128 * 1024 + (i % 128) * 1024 : (i * 977) % 16_384
  const body = post ? randomBytes(size) : undefined
  return {
    id: `${lane}-${i}-${randomBytes(4).toString('hex')}`, plan, method: post ? 'POST' : 'GET', body,
    sha: body === undefined ? EMPTY_SHA : createHash('sha256').update(body).digest('hex'),
    early: post && i % 3 === 0, via: lane,
  }
}

function headersOf(s: Sent): Record<string, string> {
  const planHeader = s.plan === 'instance-local' ? `instance=${machines.amsB.id}`
    : s.plan === 'instance-remote' ? `instance=${machines.iadB.id}`
      : s.plan === 'race' ? `instance=${machines.iadB.id};timeout=${RACE_TIMEOUT};fallback=prefer_self` : s.plan
  return { 'x-req-id': s.id, 'x-plan': planHeader, 'x-ms': String(s.id.length % 3 === 0 ? 15 : 5), ...(s.early ? { 'x-early': '1' } : {}) }
}

function readAnswer(sent: Sent, status: number, headers: Record<string, unknown>, text: string): Received {
  const replayHeaders = Object.keys(headers).filter((k) => k.toLowerCase().startsWith('fly-replay'))
  let answer: Answer | undefined
  let error: string | undefined
  if (status === 200 && String(headers['content-type'] ?? '').startsWith('application/json')) answer = JSON.parse(text) as Answer
  else error = `${String(headers['edgeproxy-error'] ?? '')} ${text.slice(0, 300)}`
  return { sent, status, replayHeaders, answer, error }
}

/** `count` HTTP/1.1 requests through `origin`, `concurrency` keep-alive loops. */
async function h1Lane(origin: string, lane: Sent['via'], count: number, concurrency: number): Promise<Received[]> {
  const agent = new Agent({ connections: concurrency, keepAliveTimeout: 30_000, pipelining: 1 })
  const out: Received[] = []
  let next = 0
  const loop = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const s = makeRequest(lane, i)
      try {
        const res = await request(`${origin}/work/${s.id}`, {
          dispatcher: agent, method: s.method, headers: { host: 'web.localhost', ...headersOf(s) }, body: s.body,
          headersTimeout: 60_000, bodyTimeout: 60_000,
        })
        out.push(readAnswer(s, res.statusCode, res.headers, await res.body.text()))
      } catch (err) {
        out.push({ sent: s, status: undefined, replayHeaders: [], answer: undefined, error: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}` })
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, () => loop()))
  await agent.close()
  return out
}

/** `count` HTTP/2 requests over one TLS connection (ALPN h2), `streams` at a time. */
async function h2Lane(port: number, count: number, streams: number): Promise<{ out: Received[]; alpn: string | false | undefined }> {
  const session: ClientHttp2Session = h2connect(`https://127.0.0.1:${port}`, { servername: 'web.localhost', rejectUnauthorized: false, ALPNProtocols: ['h2'] })
  session.on('error', () => { /* each stream reports its own failure */ })
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('h2 connect timed out')), 15_000)
    session.once('connect', () => { clearTimeout(t); resolve() })
    session.once('error', (err) => { clearTimeout(t); reject(err) })
  })
  const alpn = session.alpnProtocol
  const out: Received[] = []
  let next = 0
  const one = (s: Sent): Promise<Received> => new Promise((resolve) => {
    const stream = session.request({ ':method': s.method, ':path': `/work/${s.id}`, ':authority': 'web.localhost', ...headersOf(s) }, { endStream: s.body === undefined })
    stream.setTimeout(60_000, () => stream.close())
    let status: number | undefined
    let headers: Record<string, unknown> = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => { status = Number(h[':status']); headers = h })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('error', (err) => resolve({ sent: s, status: undefined, replayHeaders: [], answer: undefined, error: err.message }))
    stream.on('close', () => {
      if (status === undefined) { resolve({ sent: s, status: undefined, replayHeaders: [], answer: undefined, error: `stream closed (rst ${stream.rstCode})` }); return }
      resolve(readAnswer(s, status, headers, Buffer.concat(chunks).toString('utf8')))
    })
    if (s.body !== undefined) stream.end(s.body)
  })
  const loop = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) out.push(await one(makeRequest('h2', i)))
  }
  await Promise.all(Array.from({ length: streams }, () => loop()))
  await new Promise<void>((resolve) => session.close(() => resolve()))
  return { out, alpn }
}

async function journalOf(m: MachineRecord): Promise<JournalEntry[]> {
  return await getJson<JournalEntry[]>(`http://${m.privateAddr}:8080/__journal`)
}

test('fly-replay under sustained concurrent load: every request answered once, executed once, body intact, no fly-replay at the client', async () => {
  const ams = fleet.node('ams-1')
  const before = await (await request(`${ams.api}/metrics`)).body.text()
  const amsOrigin = `http://127.0.0.1:${await fleet.publicPort('ams-1', 80)}`
  const iadOrigin = `http://127.0.0.1:${await fleet.publicPort('iad-1', 80)}`
  const amsTls = await fleet.publicPort('ams-1', 443)

  const startedAt = performance.now()
  const [h1, h2, direct] = await Promise.all([
    h1Lane(amsOrigin, 'h1', H1_REQUESTS, H1_CONCURRENCY),
    h2Lane(amsTls, H2_REQUESTS, H2_STREAMS),
    h1Lane(iadOrigin, 'iad-direct', Math.round(H1_REQUESTS / 3), IAD_DIRECT_CONCURRENCY),
  ])
  const seconds = (performance.now() - startedAt) / 1000
  const after = await (await request(`${ams.api}/metrics`)).body.text()
  const all = [...h1, ...h2.out, ...direct]
  const queued = metric(after, 'edgeproxy_proxy_queued_total') - metric(before, 'edgeproxy_proxy_queued_total')
  const queueTimeouts = metric(after, 'edgeproxy_proxy_queue_timeouts_total') - metric(before, 'edgeproxy_proxy_queue_timeouts_total')

  // ---- what every client saw ----
  expect(h2.alpn).toBe('h2')
  const bad = all.filter((r) => r.status !== 200 || r.answer === undefined || r.answer.id !== r.sent.id || r.answer.sha !== r.sent.sha || r.answer.bytes !== (r.sent.body?.length ?? 0))
  expect(bad.slice(0, 10).map((r) => ({ id: r.sent.id, plan: r.sent.plan, status: r.status, error: r.error, got: r.answer?.id, sha: r.answer?.sha === r.sent.sha }))).toEqual([])
  expect(all.filter((r) => r.replayHeaders.length > 0).map((r) => [r.sent.id, r.replayHeaders])).toEqual([])
  expect(all.length).toBe(H1_REQUESTS + H2_REQUESTS + Math.round(H1_REQUESTS / 3))
  expect(new Set(all.map((r) => r.sent.id)).size).toBe(all.length)

  // ---- what the Machines executed: each request exactly once, by a Machine its plan allows ----
  const byMachine = new Map<string, JournalEntry[]>()
  for (const m of Object.values(machines)) byMachine.set(m.id, await journalOf(m))
  const executed = new Map<string, Array<{ machine: string; e: JournalEntry }>>()
  const asked = new Map<string, Array<{ machine: string; e: JournalEntry }>>()
  for (const [machine, journal] of byMachine) {
    for (const e of journal) {
      const into = e.kind === 'executed' ? executed : asked
      const list = into.get(e.id ?? '') ?? []
      list.push({ machine, e })
      into.set(e.id ?? '', list)
    }
  }
  const sentIds = new Set(all.map((r) => r.sent.id))
  // nothing executed that no client sent (no request invented or split)
  expect([...executed.keys(), ...asked.keys()].filter((id) => !sentIds.has(id))).toEqual([])
  const ofMachine = new Map(Object.values(machines).map((m) => [m.id, m]))
  const wrong: Array<Record<string, unknown>> = []
  const counts = { replayed: 0, remote: 0, early: 0, fellBack: 0, raceReached: 0, raceFellBack: 0 }
  for (const r of all) {
    const { sent, answer } = r
    const ex = executed.get(sent.id) ?? []
    const as = asked.get(sent.id) ?? []
    const problem = (why: string): void => { wrong.push({ id: sent.id, plan: sent.plan, via: sent.via, why, executedBy: ex.map((x) => x.machine), askedBy: as.map((x) => x.machine) }) }
    if (ex.length !== 1) { problem(`executed ${ex.length} times`); continue }
    if (as.length > 1) { problem(`asked for a replay ${as.length} times`); continue }
    const [{ machine: by, e }] = ex
    const executor = ofMachine.get(by)!
    const asker = as[0]?.machine
    if (answer?.machine !== by) problem(`answered by ${answer?.machine} but executed by ${by}`)
    if (e.sha !== sent.sha || e.bytes !== (sent.body?.length ?? 0)) problem('the body that arrived at the executing Machine differs')
    if (as[0] !== undefined && as[0].e.early !== true && as[0].e.sha !== sent.sha) problem('the body that arrived at the asking Machine differs')
    // a replayed request carries exactly one of the two lines; one that was not replayed carries neither
    if ((asker !== undefined) !== (e.src !== undefined || e.failed !== undefined)) problem(`asked by ${asker}, src ${e.src}, failed ${e.failed}`)
    if (e.src !== undefined && e.failed !== undefined) problem('both fly-replay-src and fly-replay-failed')
    if (asker !== undefined && e.src !== undefined && !e.src.startsWith(`instance=${asker};region=${ofMachine.get(asker)!.region};t=`)) problem(`fly-replay-src ${e.src} does not name ${asker}`)
    const alwaysReplays = sent.plan === 'app' || sent.plan === 'elsewhere' || sent.plan === 'fallback'
    if (alwaysReplays && asker === undefined) problem('its plan always replays, but no Machine asked')
    switch (sent.plan) {
      case 'self': if (e.src !== undefined || e.failed !== undefined) problem('replayed without a plan'); break
      case 'region': if (executor.region !== 'iad' || executor.app !== 'web') problem(`executed in ${executor.region}`); break
      case 'json':
        if (executor.region !== 'iad' || executor.app !== 'web') problem(`executed in ${executor.region}`)
        if ((answer?.transformed === 'yes') !== (asker !== undefined)) problem(`transform ${answer?.transformed}, asked by ${asker}`)
        break
      case 'instance-local': if (by !== machines.amsB.id) problem('not executed by the instance it named'); break
      case 'instance-remote': if (by !== machines.iadB.id) problem('not executed by the instance it named'); break
      case 'app': if (executor.app !== 'other') problem(`executed by app ${executor.app}`); break
      case 'elsewhere': if (by === asker || executor.app !== 'web') problem('executed by the Machine that asked to go elsewhere'); break
      case 'fallback':
        if (executor.app !== 'web' || e.failed === undefined || !e.failed.includes('reason=no_candidate') || !e.failed.includes(`replay_source=${asker}`)) problem(`fell back with ${e.failed} to ${executor.app}`)
        break
      case 'race':
        // either the instance took it in time, or the timeout sent it back: never both
        if (e.failed === undefined ? by !== machines.iadB.id : (executor.app !== 'web' || !e.failed.includes(`replay_source=${asker}`) || !/reason=(timeout|no_candidate)/.test(e.failed))) problem(`raced to ${by} with ${e.failed}`)
        if (e.failed !== undefined) counts.raceFellBack++
        else counts.raceReached++
        break
    }
    if (asker !== undefined) counts.replayed++
    if (asker !== undefined && executor.node !== ofMachine.get(asker)!.node) counts.remote++
    if (as[0]?.e.early === true) counts.early++
    if (e.failed !== undefined) counts.fellBack++
  }
  console.log(`replay under load: ${all.length} requests in ${seconds.toFixed(1)} s (h1 ${h1.length}, h2 ${h2.out.length}, iad direct ${direct.length}); replayed ${counts.replayed} (${counts.remote} across the backhaul, ${counts.early} before the body was read, ${counts.fellBack} fell back; timeout races: ${counts.raceReached} reached the instance, ${counts.raceFellBack} fell back); ams-1 queued ${queued}, queue timeouts ${queueTimeouts}`)
  expect(wrong.slice(0, 10)).toEqual([])
  expect(wrong.length).toBe(0)

  // the load did what it claims: many replays, across the backhaul, early ones, fallbacks, and queueing
  expect(counts.replayed).toBeGreaterThan(all.length / 3)
  expect(counts.remote).toBeGreaterThan(100)
  expect(counts.early).toBeGreaterThan(50)
  expect(counts.fellBack).toBeGreaterThan(100)
  // the timeout really raced: some replays reached the busy instance in time, others fell back
  expect(counts.raceReached).toBeGreaterThan(10)
  expect(counts.raceFellBack).toBeGreaterThan(10)
  expect(queued).toBeGreaterThan(0)
})
