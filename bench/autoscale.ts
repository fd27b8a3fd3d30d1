import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { percentile, table } from './bench-util.js'
import { type Proc, requireTools, SERVER_CORE, startPinned } from './proxy-common.js'

/**
 * Autostart benchmark (issue 8): one real node in its own process pinned to core 0 (bench/autoscale-node-main.ts,
 * catalog with fsync, supervisor, proxy), this script as the client. It measures
 * - cold start: the time from the Machine's own readiness (its listen callback, by its clock) to the first
 *   response byte at the client — what autostart adds: the readiness check seeing it, the catalog write of
 *   its health, the routing index, the held request's connect and forward (goal < 20 ms). The Machine's own
 *   spawn-to-ready time and a request to a running Machine are the baselines measured in the same run;
 * - resume: suspended Machine, request → first byte;
 * - a burst of concurrent requests against an app scaled to zero: latency p50/p99, errors (goal 0), starts.
 *
 *   npx tsx bench/autoscale.ts [--samples 20] [--bursts 5] [--burst 100]
 */
const { values: args } = parseArgs({
  options: {
    samples: { type: 'string', default: '20' },
    bursts: { type: 'string', default: '5' },
    burst: { type: 'string', default: '100' },
  },
})
const SAMPLES = Number(args.samples)
const BURSTS = Number(args.bursts)
const BURST = Number(args.burst)
const INTERNAL_PORT = 18_090

const CHECKS = `  [[services.http_checks]]\n    path = "/healthz"\n    interval = "10s"\n    timeout = "2s"\n    grace_period = "0s"\n`
const toml = (app: string, soft: number, hard: number): string =>
  `app = "${app}"\nprimary_region = "ams"\n[[services]]\n  internal_port = ${INTERNAL_PORT}\n  protocol = "tcp"\n  [services.concurrency]\n    type = "requests"\n    soft_limit = ${soft}\n    hard_limit = ${hard}\n  [[services.ports]]\n    port = 80\n    handlers = ["http"]\n${CHECKS}`

const now = (): number => performance.timeOrigin + performance.now()
const round1 = (ms: number): string => (Math.round(ms * 10) / 10).toFixed(1)

interface Info { admin: string; app: string; port80: number }
interface MachineView { id: string; state: string; ready: boolean; desiredReason: string }

requireTools(['taskset'])
let node: Proc | undefined
try {
  node = await startPinned(SERVER_CORE, process.execPath, ['--import', 'tsx', 'bench/autoscale-node-main.ts'], {
    readyText: 'ready ',
    env: { BENCH_TOMLS: JSON.stringify([toml('cold', 20, 200), toml('burst', 20, BURST)]) },
  })
  const info = JSON.parse(node.readyLine.slice(node.readyLine.indexOf('{'))) as Info
  const api = `http://${info.admin}`
  const url = `http://127.0.0.1:${info.port80}/`

  const call = async <T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> => {
    const res = await request(`${api}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: body === undefined ? {} : { 'content-type': 'application/json' } })
    const text = await res.body.text()
    if (res.statusCode >= 300) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`)
    return JSON.parse(text) as T
  }
  const waitState = async (id: string, ok: (m: MachineView) => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 30_000
    while (!ok(await call<MachineView>('GET', `/v1/machines/${id}`))) {
      if (Date.now() > deadline) throw new Error(`Machine ${id} not ${what} within 30 s`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  const create = async (app: string): Promise<string> => {
    const m = await call<MachineView>('POST', `/v1/apps/${app}/machines`, { cmd: [process.execPath, info.app], desired: 'stopped' })
    await waitState(m.id, (x) => x.state === 'stopped', 'stopped')
    return m.id
  }
  /** When this node applied the last of the events that made the cold Machine routable: ready and started. */
  const eligibleSince = async (from: number): Promise<number> => {
    const res = await request(`${api}/v1/events?from=${from}&app=cold`)
    const lines = (await res.body.text()).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string; ts: number; ready?: boolean; state?: string })
    const ready = lines.find((e) => e.type === 'health.changed' && e.ready === true)
    const started = lines.find((e) => e.type === 'machine.state' && e.state === 'started')
    if (ready === undefined || started === undefined) throw new Error('no ready/started events for the cold start')
    return Math.max(ready.ts, started.ts)
  }
  const get = async (app: string): Promise<{ status: number; body: { readyAt: number; receivedAt: number; machine: string } | undefined; at: number }> => {
    const res = await request(url, { headers: { host: `${app}.localhost` }, headersTimeout: 40_000 })
    const at = now()
    const text = await res.body.text()
    return { status: res.statusCode, body: res.statusCode === 200 ? JSON.parse(text) as { readyAt: number; receivedAt: number; machine: string } : undefined, at }
  }

  // ---- cold start, warm baseline, resume ----
  const cold = await create('cold')
  const overhead: number[] = []
  const total: number[] = []
  const own: number[] = []
  const warm: number[] = []
  const resume: number[] = []
  const recorded: number[] = []
  const routed: number[] = []
  const answered: number[] = []
  for (let i = 0; i < SAMPLES; i++) {
    const { seq } = await call<{ seq: number }>('GET', '/healthz')
    let t0 = now()
    const first = await get('cold')
    if (first.status !== 200 || first.body === undefined) throw new Error(`cold request answered ${first.status}`)
    overhead.push(first.at - first.body.readyAt)
    total.push(first.at - t0)
    own.push(first.body.readyAt - t0)
    // where the overhead goes: the catalog events that made the Machine eligible (ms timestamps)
    const eligibleAt = await eligibleSince(seq + 1)
    recorded.push(eligibleAt - first.body.readyAt)
    routed.push(first.body.receivedAt - eligibleAt)
    answered.push(first.at - first.body.receivedAt)

    t0 = now()
    const w = await get('cold')
    if (w.status !== 200) throw new Error(`warm request answered ${w.status}`)
    warm.push(w.at - t0)

    await call('POST', `/v1/machines/${cold}/suspend`)
    await waitState(cold, (x) => x.state === 'suspended', 'suspended')
    t0 = now()
    const r = await get('cold')
    if (r.status !== 200) throw new Error(`resume request answered ${r.status}`)
    resume.push(r.at - t0)

    await call('POST', `/v1/machines/${cold}/stop`)
    await waitState(cold, (x) => x.state === 'stopped', 'stopped')
    process.stderr.write(`  cold/resume sample ${i + 1}/${SAMPLES}\n`)
  }

  // ---- bursts against an app scaled to zero ----
  const burstIds = [await create('burst'), await create('burst'), await create('burst')]
  const latencies: number[] = []
  let errors = 0
  const startsPerBurst: number[] = []
  for (let b = 0; b < BURSTS; b++) {
    const agent = new Agent({ connections: BURST, pipelining: 0 })
    const t0 = now()
    const answers = await Promise.all(Array.from({ length: BURST }, async () => {
      try {
        const res = await request(url, { dispatcher: agent, headers: { host: 'burst.localhost' }, headersTimeout: 40_000 })
        const at = now()
        await res.body.dump()
        return { ok: res.statusCode === 200, ms: at - t0 }
      } catch {
        return { ok: false, ms: now() - t0 }
      }
    }))
    await agent.close()
    for (const a of answers) { latencies.push(a.ms); if (!a.ok) errors++ }
    const machines = await Promise.all(burstIds.map((id) => call<MachineView>('GET', `/v1/machines/${id}`)))
    const started = machines.filter((m) => m.state !== 'stopped')
    startsPerBurst.push(started.length)
    for (const m of started) {
      await call('POST', `/v1/machines/${m.id}/stop`)
      await waitState(m.id, (x) => x.state === 'stopped', 'stopped')
    }
    process.stderr.write(`  burst ${b + 1}/${BURSTS}\n`)
  }

  const s = (xs: number[]): number[] => [...xs].sort((a, b) => a - b)
  const row = (name: string, xs: number[], goal = ''): string[] => [name, round1(percentile(s(xs), 50)), round1(percentile(s(xs), 99)), String(xs.length), goal]
  console.log(`### Autostart (issue 8): ${SAMPLES} cold starts and resumes, ${BURSTS} bursts of ${BURST} requests; node pinned to core 0, catalog fsync ${process.env.BENCH_FSYNC === '0' ? 'off' : 'on'}\n`)
  console.log(table(['measurement', 'p50 ms', 'p99 ms', 'n', 'goal'], [
    row('cold start: first byte − the Machine\'s own ready time', overhead, '< 20 ms'),
    row('… of which: the supervisor\'s readiness check sees it ready (readiness probe every 5 ms)', recorded),
    row('… of which: the catalog write of that readiness → the request reaches the Machine (LevelDB batch, routing index, connect, forward)', routed),
    row('… of which: the Machine\'s first response → first byte at the client', answered),
    row('cold start: request → first byte', total),
    row('baseline: the Machine\'s own spawn → ready (inside the above)', own),
    row('baseline: request to the running Machine → first byte', warm),
    row('resume from suspend: request → first byte', resume),
    row(`burst of ${BURST} against an app scaled to zero: request → first byte`, latencies),
  ]))
  console.log(`\nburst errors: ${errors} of ${latencies.length} (goal 0); Machines started per burst: ${startsPerBurst.join(', ')} (hard_limit ${BURST} covers a burst: 1 expected)`)
} finally {
  await node?.stop()
}
