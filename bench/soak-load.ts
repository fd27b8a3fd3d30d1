import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { Agent, request } from 'undici'

/**
 * The load generator of bench/soak.ts, its own process pinned to the load core: a fixed request rate
 * (open loop, 10 ms ticks) of mixed traffic through the edge, every answer checked. Once a second it prints
 * one JSON line: `{"t": ms since epoch, "kinds": {kind: [ok, failed]}, "lat": [ms of proxied successes],
 * "directLat": [ms of direct successes], "why": {reason: count}, "skipped": n}`, and `done` at the end.
 *
 * Env: SOAK_TARGET (JSON {http, https, tcp: ports on 127.0.0.1, host, direct: "ip:port" of one Machine}),
 * SOAK_RPS, SOAK_SECONDS.
 */
interface Target { http: number; https: number; tcp: number; host: string; direct: string }
const target = JSON.parse(process.env.SOAK_TARGET!) as Target
const rps = Number(process.env.SOAK_RPS ?? 250)
const seconds = Number(process.env.SOAK_SECONDS ?? 60)
const MAX_IN_FLIGHT = 256
const TIMEOUT_MS = 10_000

/** The mix, per 100 requests. `direct` bypasses the proxy (the latency baseline) and is not proxied traffic. */
const MIX: Array<[Kind, number]> = [
  ['keepalive', 40], ['newconn', 10], ['https', 15], ['tcp', 10], ['big', 4], ['upload', 4], ['replay', 6], ['prefer-iad', 6], ['direct', 5],
]
type Kind = 'keepalive' | 'newconn' | 'https' | 'tcp' | 'big' | 'upload' | 'replay' | 'prefer-iad' | 'direct'
const SEQUENCE: Kind[] = spread(MIX)

const BIG_BYTES = 1048576
const UPLOAD = Buffer.alloc(256 * 1024, 0x75)
const TCP_PAYLOAD = Buffer.from(Array.from({ length: 16 * 1024 }, (_, i) => (i * 31) & 0xff))

const plain = new Agent({ connections: 32, keepAliveTimeout: 30_000 })
const tls = new Agent({ connections: 16, keepAliveTimeout: 30_000, connect: { rejectUnauthorized: false, servername: target.host } })
const direct = new Agent({ connections: 8, keepAliveTimeout: 30_000 })

class Failure extends Error {}

async function get(agent: Agent, url: string, headers: Record<string, string>, expect: (body: Buffer) => boolean, method: 'GET' | 'POST' = 'GET', body?: Buffer): Promise<void> {
  const res = await request(url, { dispatcher: agent, method, body, headers, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS })
  const bytes = Buffer.from(await res.body.arrayBuffer())
  if (res.statusCode !== 200) throw new Failure(`HTTP ${res.statusCode}${errorCode(bytes)}`)
  if (!expect(bytes)) throw new Failure('wrong body')
}

function errorCode(body: Buffer): string {
  const m = /"code":"(EP_[A-Z_]+)"/.exec(body.toString('latin1', 0, 512))
  return m === null ? '' : ` ${m[1]}`
}

/** A new TCP connection per request: `Connection: close` through node:http without an agent. */
function newConnection(): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: target.http, path: '/', agent: false, headers: { host: target.host, connection: 'close' }, timeout: TIMEOUT_MS }, (res) => {
      let n = 0
      res.on('data', (d: Buffer) => { n += d.length })
      res.on('end', () => (res.statusCode === 200 && n > 0 ? resolve() : reject(new Failure(`HTTP ${res.statusCode}`))))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Failure('timeout')))
    req.on('error', reject)
    req.end()
  })
}

/** Raw TCP through the edge: 16 KiB out, the same 16 KiB echoed back, then a clean close. */
function tcpEcho(): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: target.tcp })
    const chunks: Buffer[] = []
    let n = 0
    const timer = setTimeout(() => { s.destroy(); reject(new Failure('timeout')) }, TIMEOUT_MS)
    s.on('connect', () => s.end(TCP_PAYLOAD))
    s.on('data', (d: Buffer) => { chunks.push(d); n += d.length })
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
    s.on('close', () => {
      clearTimeout(timer)
      if (n === TCP_PAYLOAD.length && Buffer.concat(chunks).equals(TCP_PAYLOAD)) resolve()
      else reject(new Failure(`tcp echo ${n}/${TCP_PAYLOAD.length} bytes`))
    })
  })
}

const http = `http://127.0.0.1:${target.http}`
const hostOnly = { host: target.host }
const regionIs = (r: string) => (b: Buffer): boolean => b.includes(`"region":"${r}"`)
const anyRegion = (b: Buffer): boolean => b.includes('"region":')

function run(kind: Kind): Promise<void> {
  switch (kind) {
    case 'keepalive': return get(plain, `${http}/`, hostOnly, anyRegion)
    case 'newconn': return newConnection()
    case 'https': return get(tls, `https://127.0.0.1:${target.https}/`, hostOnly, anyRegion)
    case 'tcp': return tcpEcho()
    case 'big': return get(plain, `${http}/big`, hostOnly, (b) => b.length === BIG_BYTES)
    case 'upload': return get(plain, `${http}/upload`, { ...hostOnly, 'content-type': 'application/octet-stream' }, (b) => b.includes(`"bytes":${UPLOAD.length}`), 'POST', UPLOAD)
    case 'replay': return get(plain, `${http}/replay`, hostOnly, regionIs('iad'))
    case 'prefer-iad': return get(plain, `${http}/`, { ...hostOnly, 'fly-prefer-region': 'iad' }, anyRegion)
    case 'direct': return get(direct, `http://${target.direct}/`, {}, anyRegion)
  }
}

let inFlight = 0
let bucket = newBucket()
function newBucket(): { kinds: Record<string, [number, number]>; lat: number[]; directLat: number[]; why: Record<string, number>; skipped: number } {
  return { kinds: {}, lat: [], directLat: [], why: {}, skipped: 0 }
}

function launch(kind: Kind): void {
  if (inFlight >= MAX_IN_FLIGHT) { bucket.skipped++; return }
  inFlight++
  const t0 = performance.now()
  run(kind).then(() => {
    const ms = Math.round((performance.now() - t0) * 100) / 100
    ;(kind === 'direct' ? bucket.directLat : bucket.lat).push(ms)
    count(kind, true)
  }, (err: Error & { code?: string }) => {
    count(kind, false)
    const why = `${kind}: ${err instanceof Failure ? err.message : err.code ?? err.message}`
    bucket.why[why] = (bucket.why[why] ?? 0) + 1
  }).finally(() => { inFlight-- })
}

function count(kind: Kind, ok: boolean): void {
  const c = (bucket.kinds[kind] ??= [0, 0])
  c[ok ? 0 : 1]++
}

/** Interleaves the mix so that every second carries every kind. */
function spread(mix: Array<[Kind, number]>): Kind[] {
  const total = mix.reduce((s, [, w]) => s + w, 0)
  const out: Kind[] = []
  const acc = mix.map(() => 0)
  for (let i = 0; i < total; i++) {
    mix.forEach(([, w], j) => { acc[j] += w })
    let best = 0
    for (let j = 1; j < mix.length; j++) if (acc[j] > acc[best]) best = j
    acc[best] -= total
    out.push(mix[best][0])
  }
  return out
}

const started = performance.now()
let launched = 0
let next = 0
let lastFlush = Date.now()
const tick = setInterval(() => {
  const due = Math.floor(((performance.now() - started) / 1000) * rps)
  while (launched < due) { launch(SEQUENCE[next++ % SEQUENCE.length]); launched++ }
  if (Date.now() - lastFlush >= 1000) flush()
  if (performance.now() - started >= seconds * 1000) void finish()
}, 10)

function flush(): void {
  lastFlush = Date.now()
  process.stdout.write(`${JSON.stringify({ t: lastFlush, ...bucket })}\n`)
  bucket = newBucket()
}

let finishing = false
async function finish(): Promise<void> {
  if (finishing) return
  finishing = true
  clearInterval(tick)
  const deadline = Date.now() + TIMEOUT_MS + 2000
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  flush()
  await Promise.all([plain.close(), tls.close(), direct.close()])
  process.stdout.write(`done ${JSON.stringify({ launched, inFlight })}\n`)
  process.exit(0)
}
process.on('SIGTERM', () => { void finish() })
