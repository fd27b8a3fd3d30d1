import '../tools/polyfills.js'
import { readFileSync, rmSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { fmt, percentile, table } from './bench-util.js'
import { benchEntry, freePort, LOAD_CORE, type Proc, requireTools, startPinned } from './proxy-common.js'
import { Daemon, listeningSockets, openFds, processesWith, rssBytes, runCli, slope, waitFor } from './soak-fleet.js'

/**
 * Soak (issue 11 item 16): SOAK_MINUTES (default 10) of mixed traffic through a real two-node fleet, with a
 * Machine crash and a node restart in the middle. ams-1 (edge + worker) and iad-1 (worker) are `edgeproxy
 * daemon` processes of the built CLI sharing a fleet folder with a CA (so the backhaul is mutual TLS); the
 * app has two Machines on each (bench/soak-machine.ts). bench/soak-load.ts, pinned to the load core, offers
 * SOAK_RPS (default 250) requests a second: keep-alive and new-connection HTTP, HTTPS, raw TCP echo, 1 MiB
 * downloads and 256 KiB uploads, fly-replay to iad, fly-prefer-region: iad, and a share sent straight to a
 * Machine as the latency baseline. At 25 % of the run one ams Machine gets SIGKILL (its supervisor restarts
 * it); at 40 % iad-1 gets SIGTERM and is started again from its data dir. Every SAMPLE_SECONDS: RSS, heap,
 * open fds of each daemon and the count of Machine processes. After the load: fds idle again, shutdown, and
 * a check that no process or listening socket of the soak is left.
 *
 *   npm run bench -- soak            (SOAK_MINUTES=1 for a quick check; SOAK_RPS to change the rate)
 */
const MINUTES = Number(process.env.SOAK_MINUTES ?? 10)
const RPS = Number(process.env.SOAK_RPS ?? 250)
const SAMPLE_SECONDS = 5
const SECONDS = Math.round(MINUTES * 60)
const CRASH_AT = 0.25
const RESTART_AT = 0.4
/** Memory "start" is the first sample after this share of the run (warm-up). */
const WARMUP_SHARE = 0.1
/** Fault windows end this long after the fleet is whole again (routing, pools and health settle). */
const SETTLE_MS = 5000
/** RSS slope over the last half below this is "no growth trend": 1 MiB/min would be 1.4 GiB a day. */
const GROWTH_MIB_PER_MIN = 1
/** fds idle after the load may exceed idle before it by this much (pooled keep-alive sockets, log files). */
const FD_TOLERANCE = 8
/** A trend needs this many samples (2 min at SAMPLE_SECONDS = 5); shorter runs report the slope without a verdict. */
const MIN_FIT_SAMPLES = 24

requireTools(['taskset'])
const tag = `--soak-tag=${process.pid}-${Date.now()}`
const octet = process.pid % 250
const AMS_IP = `127.81.${octet}.10`
const IAD_IP = `127.81.${octet}.11`
const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-bench-soak-'))
const fleetDir = join(dir, 'fleet')
const log = (msg: string): void => { process.stderr.write(`  soak: ${msg}\n`) }

const toml = `app = "soak"
primary_region = "ams"
kill_signal = "SIGTERM"
kill_timeout = 5
[env]
  SOAK_TCP_PORT = "9000"
[[services]]
  internal_port = 8080
  protocol = "tcp"
  auto_stop_machines = "off"
  [services.concurrency]
    type = "requests"
    soft_limit = 200
    hard_limit = 1000
  [[services.ports]]
    port = 80
    handlers = ["http"]
  [[services.ports]]
    port = 443
    handlers = ["tls", "http"]
  [[services.http_checks]]
    path = "/healthz"
    interval = "5s"
    timeout = "2s"
    grace_period = "0s"
[[services]]
  internal_port = 9000
  protocol = "tcp"
  auto_stop_machines = "off"
  [services.concurrency]
    type = "connections"
    soft_limit = 200
    hard_limit = 1000
  [[services.ports]]
    port = 7000
    handlers = []
`

interface MachineView { id: string; node: string; state: string; ready: boolean; privateAddr?: string }
interface Sample { t: number; rss: Record<string, number>; heap: Record<string, number>; fds: Record<string, number>; machines: number }
interface Tick { t: number; kinds: Record<string, [number, number]>; lat: number[]; directLat: number[]; why: Record<string, number>; skipped: number }
interface Window { name: string; from: number; to: number; recoveredMs: number }

const daemons: Daemon[] = []
let load: Proc | undefined
let failed = false

/** Interrupted (Ctrl-C, a timeout): still leave no daemon, Machine or temp dir behind. */
async function cleanUp(): Promise<void> {
  await load?.stop()
  await Promise.all(daemons.map((d) => d.stop()))
  for (const pid of processesWith(tag)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
  rmSync(dir, { recursive: true, force: true })
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => { void cleanUp().finally(() => process.exit(130)) })

try {
  runCli(['fleet', 'init', '--out', fleetDir])
  const common = (ip: string, name: string, net: number): string[] => [
    '--data-dir', join(dir, name), '--admin', '127.0.0.1:0', '--fleet', fleetDir, '--gossip-dial-from', ip,
    '--machine-range', `127.${net}.${octet}.0/24`, '--heartbeat-ms', '500', '--down-after-ms', '3000', '--sync-interval-ms', '2000',
    '--request-log-sample', '0', '--autostop-interval-ms', '60000',
  ]
  const amsGossip = await freePort(AMS_IP)
  const ams = new Daemon({ name: 'ams-1', region: 'ams', roles: 'edge,worker', args: [...common(AMS_IP, 'ams-1', 82),
    '--gossip-listen', `/ip4/${AMS_IP}/tcp/${amsGossip}`, '--backhaul-listen', `${AMS_IP}:0`, '--port-map', '80=0,443=0,7000=0'] })
  // iad comes back on the same addresses after its restart, as a host would
  const iad = new Daemon({ name: 'iad-1', region: 'iad', roles: 'worker', args: [...common(IAD_IP, 'iad-1', 83),
    '--gossip-listen', `/ip4/${IAD_IP}/tcp/${await freePort(IAD_IP)}`, '--backhaul-listen', `${IAD_IP}:${await freePort(IAD_IP)}`,
    '--bootstrap', `/ip4/${AMS_IP}/tcp/${amsGossip}`] })
  daemons.push(ams, iad)
  await ams.start()
  await iad.start()
  const fleetUp = (): Promise<boolean> => ams.getJson<Array<{ name: string; up: boolean }>>('/v1/nodes').then((ns) => ns.length === 2 && ns.every((n) => n.up))
  await waitFor(async () => (await fleetUp()) || undefined, 'both nodes up as ams-1 sees them')
  log('fleet up')

  await ams.send('PUT', '/v1/apps/soak', toml, 'text/plain')
  const cmd = [process.execPath, join(import.meta.dirname, 'soak-machine.js'), tag]
  const machines: MachineView[] = []
  for (const node of ['ams-1', 'ams-1', 'iad-1', 'iad-1']) machines.push(await ams.send<MachineView>('POST', '/v1/apps/soak/machines', JSON.stringify({ node, cmd }), 'application/json'))
  const machine = (id: string): Promise<MachineView> => ams.getJson<MachineView>(`/v1/machines/${id}`)
  const allReady = async (ids: string[]): Promise<true | undefined> => ((await Promise.all(ids.map(machine))).every((m) => m.state === 'started' && m.ready) ? true : undefined)
  await waitFor(() => allReady(machines.map((m) => m.id)), '4 Machines started and ready, as ams-1 sees them', 60_000)
  const [crashed, baseline] = await Promise.all([machine(machines[0].id), machine(machines[1].id)])
  await waitFor(() => ([80, 443, 7000].every((p) => ams.publicPorts.has(p)) ? true : undefined), 'public listeners on ams-1')
  const port = (p: number): number => ams.publicPorts.get(p)!
  await waitFor(async () => {
    const res = await request(`http://127.0.0.1:${port(80)}/`, { headers: { host: 'soak.localhost' }, headersTimeout: 5000 })
    await res.body.dump()
    return res.statusCode === 200 ? true : undefined
  }, 'the app answering through ams-1')
  log(`4 Machines ready; public ports ${[80, 443, 7000].map((p) => `${p}→${port(p)}`).join(' ')}`)

  // ---- idle baseline ----
  const sample = async (): Promise<Sample> => {
    const s: Sample = { t: Date.now(), rss: {}, heap: {}, fds: {}, machines: processesWith(tag).length }
    for (const d of daemons) {
      s.rss[d.spec.name] = d.running ? rssBytes(d.pid) : Number.NaN
      s.fds[d.spec.name] = d.running ? openFds(d.pid) : Number.NaN
      s.heap[d.spec.name] = d.running ? await d.metric('edgeproxy_nodejs_heap_size_used_bytes') : Number.NaN
    }
    return s
  }
  await new Promise((r) => setTimeout(r, 2000))
  const idleBefore = await sample()

  // ---- load, faults, sampling ----
  const ticks: Tick[] = []
  let loadDone!: () => void
  const loadFinished = new Promise<void>((r) => { loadDone = r })
  load = await startPinned(LOAD_CORE, process.execPath, benchEntry('soak-load'), {
    env: {
      SOAK_TARGET: JSON.stringify({ http: port(80), https: port(443), tcp: port(7000), host: 'soak.localhost', direct: `${baseline.privateAddr}:8080` }),
      SOAK_RPS: String(RPS), SOAK_SECONDS: String(SECONDS),
    },
  })
  let partial = ''
  load.child.stdout!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n')
    partial = lines.pop()!
    for (const line of lines) {
      if (line.startsWith('{')) ticks.push(JSON.parse(line) as Tick)
      else if (line.startsWith('done')) loadDone()
    }
  })
  load.child.once('exit', () => loadDone())
  const t0 = Date.now()
  log(`load started: ${RPS} req/s for ${SECONDS} s`)
  const samples: Sample[] = []
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      samples.push(await sample())
      const s = samples[samples.length - 1]
      log(`t=${Math.round((s.t - t0) / 1000)}s rss ${daemons.map((d) => `${d.spec.name} ${fmt(s.rss[d.spec.name] / 2 ** 20, 1)}`).join(', ')} MiB; fds ${daemons.map((d) => s.fds[d.spec.name]).join('/')}; Machines ${s.machines}`)
      await new Promise((r) => setTimeout(r, SAMPLE_SECONDS * 1000))
    }
  })()
  const at = (share: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, t0 + share * SECONDS * 1000 - Date.now())))
  const windows: Window[] = []
  /** When a daemon's current process was whole again after a restart: its growth fit starts after its own warm-up. */
  const restarted: Record<string, number> = {}

  await at(CRASH_AT)
  const pidFile = join(dir, 'ams-1', 'machines', crashed.id, 'machine.json')
  const oldPid = (JSON.parse(readFileSync(pidFile, 'utf8')) as { pid: number }).pid
  const crashAt = Date.now()
  process.kill(oldPid, 'SIGKILL')
  log(`SIGKILL to Machine ${crashed.id} (pid ${oldPid})`)
  await waitFor(async () => {
    const rec = JSON.parse(readFileSync(pidFile, 'utf8')) as { pid: number }
    const m = await machine(crashed.id)
    return rec.pid !== oldPid && m.state === 'started' && m.ready ? true : undefined
  }, `Machine ${crashed.id} restarted and ready`, 60_000, 20)
  windows.push({ name: 'Machine crash', from: crashAt, to: Date.now() + SETTLE_MS, recoveredMs: Date.now() - crashAt })
  log(`Machine ${crashed.id} back in ${Date.now() - crashAt} ms`)

  await at(RESTART_AT)
  const restartAt = Date.now()
  const code = await iad.stop()
  log(`iad-1 stopped (exit ${code}) in ${Date.now() - restartAt} ms; Machine processes now ${processesWith(tag).length}`)
  await iad.start()
  const iadIds = machines.filter((m) => m.node === 'iad-1').map((m) => m.id)
  await waitFor(async () => ((await fleetUp()) && (await allReady(iadIds)) ? true : undefined), 'iad-1 up and its Machines ready again', 60_000, 50)
  windows.push({ name: 'node restart', from: restartAt, to: Date.now() + SETTLE_MS, recoveredMs: Date.now() - restartAt })
  restarted[iad.spec.name] = Date.now()
  log(`iad-1 back in ${Date.now() - restartAt} ms`)

  let loadTimer: NodeJS.Timeout | undefined
  await Promise.race([loadFinished, new Promise((_, reject) => {
    loadTimer = setTimeout(() => reject(new Error('the load generator did not finish in time')), Math.max(0, t0 + SECONDS * 1000 + 60_000 - Date.now()))
  })]).finally(() => clearTimeout(loadTimer))
  sampling = false
  await sampler
  await load.stop()
  load = undefined
  // idle again: let keep-alive pools on every side time out their sockets
  await new Promise((r) => setTimeout(r, 5000))
  const idleAfter = await sample()

  // ---- shutdown and leak check ----
  const codes = await Promise.all([...daemons].reverse().map(async (d) => `${d.spec.name} ${await d.stop()}`))
  const leftProcs = await waitFor(() => { const p = processesWith(tag); return p.length === 0 ? p : undefined }, 'Machine processes to exit', 10_000).catch(() => processesWith(tag))
  for (const pid of leftProcs) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
  const ours = (addr: string): boolean => addr.startsWith(`127.81.${octet}.`) || addr.startsWith(`127.82.${octet}.`) || addr.startsWith(`127.83.${octet}.`) ||
    [...ams.publicPorts.values()].some((p) => addr === `127.0.0.1:${p}`) || daemons.some((d) => addr === d.admin)
  const leftSockets = listeningSockets().filter(ours)
  const daemonsLeft = daemons.filter((d) => d.running).length
  if (leftProcs.length + leftSockets.length + daemonsLeft > 0) failed = true

  console.log(report({ ticks, samples, windows, idleBefore, idleAfter, t0, restarted, crashed: crashed.id, codes, leftProcs, leftSockets, daemonsLeft }))
} catch (err) {
  failed = true
  process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`)
  for (const d of daemons) process.stderr.write(`--- ${d.spec.name} log tail ---\n${d.logTail().split('\n').slice(-30).join('\n')}\n`)
} finally {
  await cleanUp()
}
process.exit(failed ? 1 : 0)

interface ReportInput {
  ticks: Tick[]; samples: Sample[]; windows: Window[]; idleBefore: Sample; idleAfter: Sample; t0: number; restarted: Record<string, number>; crashed: string
  codes: string[]; leftProcs: number[]; leftSockets: string[]; daemonsLeft: number
}

function report(r: ReportInput): string {
  const inWindow = (t: number): Window | undefined => r.windows.find((w) => t >= w.from && t - 1000 <= w.to)
  const tally = (ticks: Tick[], proxied = true): { n: number; err: number } => {
    let n = 0
    let err = 0
    for (const t of ticks) for (const [k, [ok, bad]] of Object.entries(t.kinds)) if ((k === 'direct') !== proxied) { n += ok + bad; err += bad }
    return { n, err }
  }
  const rate = (x: { n: number; err: number }): string => `${x.n === 0 ? '–' : `${fmt((100 * x.err) / x.n, 3)} %`}`
  const quiet = r.ticks.filter((t) => inWindow(t.t) === undefined)
  const all = tally(r.ticks)
  const trafficRows: Array<Array<string | number>> = [
    ['all proxied requests', fmt(all.n), fmt(all.err), rate(all)],
    ['outside the fault windows', fmt(tally(quiet).n), fmt(tally(quiet).err), rate(tally(quiet))],
    ...r.windows.map((w) => {
      const x = tally(r.ticks.filter((t) => inWindow(t.t) === w))
      return [`${w.name} window (${fmt((w.to - w.from) / 1000, 1)} s: fault → whole again ${fmt(w.recoveredMs / 1000, 1)} s, + ${SETTLE_MS / 1000} s)`, fmt(x.n), fmt(x.err), rate(x)]
    }),
    ['direct to a Machine (baseline, not proxied)', fmt(tally(r.ticks, false).n), fmt(tally(r.ticks, false).err), rate(tally(r.ticks, false))],
  ]
  const kinds = [...new Set(r.ticks.flatMap((t) => Object.keys(t.kinds)))].filter((k) => k !== 'direct')
  const kindRow = kinds.map((k) => {
    const c = r.ticks.reduce((s, t) => [s[0] + (t.kinds[k]?.[0] ?? 0), s[1] + (t.kinds[k]?.[1] ?? 0)], [0, 0])
    return `${k} ${fmt(c[0] + c[1])} (${fmt(c[1])} failed)`
  }).join(', ')
  const why = new Map<string, number>()
  for (const t of r.ticks) for (const [k, v] of Object.entries(t.why)) why.set(k, (why.get(k) ?? 0) + v)
  const whyText = [...why.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} × ${v}`).join('; ') || 'none'
  const skipped = r.ticks.reduce((s, t) => s + t.skipped, 0)

  const sorted = (xs: number[]): number[] => xs.sort((a, b) => a - b)
  const quietLat = sorted(quiet.flatMap((t) => t.lat))
  const allLat = sorted(r.ticks.flatMap((t) => t.lat))
  const direct = sorted(quiet.flatMap((t) => t.directLat))
  const d50 = percentile(direct, 50)
  const d99 = percentile(direct, 99)
  const latRow = (name: string, xs: number[]): Array<string | number> => [name, fmt(xs.length), fmt(percentile(xs, 50), 2), fmt(percentile(xs, 99), 2), fmt(percentile(xs, 50) / d50, 2), fmt(percentile(xs, 99) / d99, 2)]

  const mib = (b: number): string => (Number.isNaN(b) ? '–' : fmt(b / 2 ** 20, 1))
  const half = r.t0 + (SECONDS * 1000) / 2
  const middle = r.samples.reduce((best, s) => (Math.abs(s.t - half) < Math.abs(best.t - half) ? s : best), r.samples[0])
  // start: the first sample after the warm-up (JIT, pools, TLS session caches fill in the first minute)
  const first = r.samples.find((s) => s.t >= r.t0 + WARMUP_SHARE * SECONDS * 1000) ?? r.samples[0]
  const last = r.samples[r.samples.length - 1]
  const warmupMs = WARMUP_SHARE * SECONDS * 1000
  // the last half, and for a restarted daemon only its new process after its own warm-up
  const fitted = (name: string, f: (s: Sample) => Record<string, number>): Sample[] =>
    r.samples.filter((s) => s.t >= Math.max(half, (r.restarted[name] ?? 0) + warmupMs) && !Number.isNaN(f(s)[name]))
  const perMin = (name: string, f: (s: Sample) => Record<string, number>): number =>
    slope(fitted(name, f).map((s) => [(s.t - r.t0) / 60_000, f(s)[name] / 2 ** 20]))
  const names = Object.keys(first.rss)
  const memRows = names.map((n) => {
    const rssSlope = perMin(n, (s) => s.rss)
    const points = fitted(n, (s) => s.rss).length
    const verdict = points < MIN_FIT_SAMPLES ? `too few samples (${points}) for a trend: run longer`
      : Math.abs(rssSlope) < GROWTH_MIB_PER_MIN ? 'no growth trend' : rssSlope > 0 ? '**growing**' : 'shrinking'
    return [n, mib(first.rss[n]), mib(middle.rss[n]), mib(last.rss[n]), fmt(last.rss[n] / first.rss[n], 2), `${fmt(rssSlope, 2)} (${points} samples)`,
      `${mib(first.heap[n])} / ${mib(last.heap[n])}`, fmt(perMin(n, (s) => s.heap), 2), verdict]
  })
  const leakRows: Array<Array<string | number>> = [
    ...names.map((n) => {
      const grew = r.idleAfter.fds[n] - r.idleBefore.fds[n]
      return [`${n} open fds`, r.idleBefore.fds[n], first.fds[n], last.fds[n], r.idleAfter.fds[n], fmt(r.idleAfter.fds[n] / r.idleBefore.fds[n], 2), grew <= FD_TOLERANCE ? 'no leak' : `**+${grew}**`]
    }),
    ['Machine processes', r.idleBefore.machines, first.machines, last.machines, r.idleAfter.machines, fmt(r.idleAfter.machines / r.idleBefore.machines, 2), r.idleAfter.machines === r.idleBefore.machines ? 'no leak' : '**changed**'],
  ]
  const minMachines = Math.min(...r.samples.map((s) => s.machines))
  const idleNote = 'iad-1\'s idle-after-load is its restarted process, compared with the first one\'s idle count'

  return `### Soak (issue 11 item 16): ${MINUTES} min of mixed traffic, a Machine crash and a node restart

Fleet: \`edgeproxy daemon\` ams-1 (edge, worker) and iad-1 (worker) from the build, a fleet CA (mutual-TLS backhaul),
two Machines (bench/soak-machine.ts) on each; daemons and Machines pinned to core 0, the load generator
(bench/soak-load.ts) to core 1. Offered load ${RPS} req/s (open loop), per 100: 40 keep-alive GET, 10 GET on a new
connection, 15 HTTPS keep-alive GET, 10 raw TCP 16 KiB echo, 4 × 1 MiB GET, 4 × 256 KiB POST, 6 fly-replay to iad,
6 \`fly-prefer-region: iad\`, 5 straight to an ams Machine (the baseline). Faults: SIGKILL of Machine ${r.crashed}'s process
at ${CRASH_AT * 100} % (the supervisor restarts it), SIGTERM of iad-1 at ${RESTART_AT * 100} % and a start from its data dir. Every
answer is checked (status 200 and the expected body).

${table(['traffic', 'requests', 'failed', 'error rate'], trafficRows)}

By kind: ${kindRow}. Not sent because ${256} were in flight: ${skipped}. Failures: ${whyText}.

${table(['latency (request → last byte)', 'requests', 'p50 ms', 'p99 ms', 'p50 ÷ direct', 'p99 ÷ direct'], [
    latRow('proxied, outside the fault windows', quietLat),
    latRow('proxied, whole run', allLat),
    latRow('direct to a Machine, outside the fault windows (baseline)', direct),
  ])}

Memory, sampled every ${SAMPLE_SECONDS} s (start = first sample after ${WARMUP_SHARE * 100} % of the run as warm-up, middle = nearest ${fmt(SECONDS / 120, 1)} min, end = last
sample under load; iad-1 restarted at ${RESTART_AT * 100} %, so its start and end are different processes). Slopes are least
squares over the last half of the run, for iad-1 only from its new process's own warm-up on; "no growth trend" when
|RSS slope| < ${GROWTH_MIB_PER_MIN} MiB/min over at least ${MIN_FIT_SAMPLES} samples.

${table(['daemon', 'RSS start MiB', 'middle', 'end', 'end ÷ start', 'RSS slope, last half, MiB/min', 'heap used start / end MiB', 'heap slope MiB/min', 'verdict'], memRows)}

${table(['leak check', 'idle before load', 'start of load', 'end of load', 'idle after load (+5 s)', 'after ÷ before', `verdict (fds: ≤ +${FD_TOLERANCE})`], leakRows)}

(${idleNote}; "start of load" is the warm-up sample above.)

Machine processes during the run: at least ${minMachines} (the crash and the node restart), ${last.machines} at the end.
After shutdown: exit codes ${r.codes.join(', ')}; daemons still running ${r.daemonsLeft}; Machine processes left ${r.leftProcs.length}; listening
sockets left on the soak's addresses ${r.leftSockets.length === 0 ? 0 : r.leftSockets.join(', ')}.
`
}
