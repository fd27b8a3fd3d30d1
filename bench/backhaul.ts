import '../tools/polyfills.js'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pino from 'pino'
import { openCatalog } from '../catalog/index.js'
import type { Catalog } from '../catalog/catalog-api.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import { createFleetCa } from '../tools/pki/fleet-ca.js'
import { issueNodeCert } from '../tools/pki/node-cert.js'
import { cpuMicros, markdownTable, median, type Proc, requireTools, runWrk, SERVER_CORE, startBackend, startPinned, type WrkResult } from './proxy-common.js'

/**
 * One backhaul hop against a direct connection, in the same run (issue 7). Two edges run the same proxy
 * code: "direct" reaches its Machines on its own node; "backhaul" reaches the same backends as Machines of
 * a worker node, through the worker's backhaul listener (mutual TLS 1.3, one multiplexed connection).
 * Server-side processes share core 0 (backends, both edges, the worker), wrk runs on core 1; rounds are
 * interleaved and medians reported. CPU is the proxy side's: the edge, plus the worker for the backhaul.
 *
 *   npx tsx bench/backhaul.ts [--rounds 3] [--seconds 4] [--warmup 1] [--connections 50] [--bytes 1048576]
 */
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '50' },
    bytes: { type: 'string', default: '1048576' },
  },
})
const rounds = Number(args.rounds)
const seconds = Number(args.seconds)

requireTools(['wrk', 'taskset'])
const dir = mkdtempSync(join(tmpdir(), 'edgeproxy-bench-backhaul-'))
const log = pino({ level: 'warn' })
const SMALL_ADDR = '127.66.251.1'
const BIG_ADDR = '127.66.251.2'
const procs: Proc[] = []

const appToml = (app: string, port: number): string => `app = "${app}"\n[[services]]\ninternal_port = ${port}\n[services.concurrency]\ntype = "requests"\nsoft_limit = 10000\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`

/** One Machine per backend on `host` (the worker, or the direct edge itself). */
async function addMachines(catalog: Catalog, host: string, apps: Array<{ app: string; port: number; addr: string }>): Promise<void> {
  for (const a of apps) {
    await catalog.deployApp(parseAppConfigText(appToml(a.app, a.port)).config)
    const m = await catalog.createMachine({ app: a.app, region: 'ams', node: host, spec: { cmd: ['bench-backend'], env: {}, processGroup: 'app' } })
    await catalog.reportObserved(m.id, { state: 'started', reason: 'bench', privateAddr: a.addr })
    await catalog.reportHealth(m.id, { checks: {}, ready: true })
  }
}

async function openNode(name: string): Promise<Catalog> {
  const c = await openCatalog({ dataDir: join(dir, name), nodeName: name, logger: log, sync: false })
  await c.upsertSelf({ name, region: 'ams', roles: name === 'bench-worker' ? ['worker'] : ['edge', 'worker'], gossip: [], startedAt: Date.now(), load: { machines: 0, connections: 0 }, version: 'bench' })
  return c
}

/**
 * The catalogs: the worker's Machines are written on the worker (only a host reports its Machines) and
 * replicated into the backhaul edge's catalog through the catalog's replica interface, as gossip would.
 */
async function prepareCatalogs(apps: Array<{ app: string; port: number; addr: string }>): Promise<void> {
  const worker = await openNode('bench-worker')
  const edge = await openNode('bench-edge')
  const applied: Array<Promise<unknown>> = []
  const sub = worker.onLocalChange((docId, changes) => { applied.push(edge.applyRemoteChanges(docId, changes, 'bench-worker')) })
  await addMachines(worker, 'bench-worker', apps)
  await Promise.all(applied)
  sub.close()
  const direct = await openNode('bench-direct')
  await addMachines(direct, 'bench-direct', apps)
  for (const c of [worker, edge, direct]) await c.close()
}

function startEdge(node: string, tlsFile: string, workerAddr: string): Promise<Proc & { port: number }> {
  return startPinned(SERVER_CORE, process.execPath, ['--import', 'tsx', 'bench/backhaul-edge-main.ts'], {
    readyText: 'ready',
    env: { BENCH_DIR: join(dir, node), BENCH_NODE: node, BENCH_TLS: tlsFile, BENCH_WORKER: 'bench-worker', BENCH_WORKER_ADDR: workerAddr, BENCH_PORTS: JSON.stringify({ 80: 0 }) },
  }).then((p) => ({ ...p, port: (JSON.parse(p.readyLine.slice(6)) as Record<string, number>)['80'] }))
}

interface Target { name: string; port: number; pids: number[] }
interface Measured extends WrkResult { cpuUs: number }

/** Interleaved rounds of one wrk setting against both targets; medians per target. */
function measure(label: string, targets: Target[], o: { connections: number; host: string; extra?: string[] }): Map<string, Measured[]> {
  const out = new Map<string, Measured[]>()
  const wrkArgs = ['-H', `Host: ${o.host}`, ...(o.extra ?? [])]
  for (const t of targets) runWrk(`http://127.0.0.1:${t.port}/`, Number(args.warmup), o.connections, wrkArgs)
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const before = t.pids.reduce((s, p) => s + cpuMicros(p), 0)
      const res = runWrk(`http://127.0.0.1:${t.port}/`, seconds, o.connections, wrkArgs)
      const cpuUs = t.pids.reduce((s, p) => s + cpuMicros(p), 0) - before
      out.set(t.name, [...(out.get(t.name) ?? []), { ...res, cpuUs }])
      process.stderr.write(`${label} round ${r + 1} ${t.name}: ${res.rps.toFixed(0)} req/s, ${res.mbPerSec.toFixed(1)} MB/s, p50 ${res.p50ms} ms, p99 ${res.p99ms} ms, errors ${res.errors}\n`)
    }
  }
  return out
}

const med = (xs: Measured[], f: (x: Measured) => number): number => median(xs.map(f))
const ms = (n: number): string => n.toFixed(3)
const delta = (n: number): string => `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(3)} ms`

try {
  const small = await startBackend({ BACKEND_HOST: SMALL_ADDR, BACKEND_KIND: 'http', BACKEND_BYTES: '11' })
  procs.push(small)
  const big = await startBackend({ BACKEND_HOST: BIG_ADDR, BACKEND_KIND: 'http', BACKEND_BYTES: args.bytes! })
  procs.push(big)
  await prepareCatalogs([{ app: 'small', port: small.port, addr: SMALL_ADDR }, { app: 'big', port: big.port, addr: BIG_ADDR }])

  const ca = await createFleetCa()
  const tlsFile = (name: string, pair: { certPem: string; keyPem: string }): string => {
    const path = join(dir, `${name}.tls.json`)
    writeFileSync(path, JSON.stringify({ ...pair, caPem: ca.certPem }), { mode: 0o600 })
    return path
  }
  const worker = await startPinned(SERVER_CORE, process.execPath, ['--import', 'tsx', 'bench/backhaul-worker-main.ts'], {
    readyText: 'ready',
    env: { BENCH_DIR: join(dir, 'bench-worker'), BENCH_NODE: 'bench-worker', BENCH_TLS: tlsFile('worker', await issueNodeCert(ca, 'bench-worker')) },
  })
  procs.push(worker)
  const workerAddr = worker.readyLine.slice(6).trim()
  const viaBackhaul = await startEdge('bench-edge', tlsFile('edge', await issueNodeCert(ca, 'bench-edge')), workerAddr)
  procs.push(viaBackhaul)
  const direct = await startEdge('bench-direct', tlsFile('direct', await issueNodeCert(ca, 'bench-direct')), workerAddr)
  procs.push(direct)

  const targets: Target[] = [
    { name: 'direct', port: direct.port, pids: [direct.pid] },
    { name: 'backhaul', port: viaBackhaul.port, pids: [viaBackhaul.pid, worker.pid] },
  ]
  const c = Number(args.connections)
  const latency = measure('latency c1', targets, { connections: 1, host: 'small.localhost' })
  const rps = measure(`small GET c${c}`, targets, { connections: c, host: 'small.localhost' })
  const churn = measure(`new connection per request c${c}`, targets, { connections: c, host: 'small.localhost', extra: ['-H', 'Connection: close'] })
  const bulk = measure(`${Number(args.bytes) / 1048576} MiB GET c10`, targets, { connections: 10, host: 'big.localhost' })

  const d = (m: Map<string, Measured[]>): Measured[] => m.get('direct')!
  const b = (m: Map<string, Measured[]>): Measured[] => m.get('backhaul')!
  const perReq = (x: Measured): number => x.cpuUs / Math.max(1, x.requests)
  const perMiB = (x: Measured): number => x.cpuUs / Math.max(1e-9, x.mbPerSec * seconds)
  const rows: Array<Array<string | number>> = [
    ['one request at a time (wrk -c1): p50 latency ms', ms(med(d(latency), (x) => x.p50ms)), ms(med(b(latency), (x) => x.p50ms)), delta(med(b(latency), (x) => x.p50ms) - med(d(latency), (x) => x.p50ms))],
    ['one request at a time (wrk -c1): p99 latency ms', ms(med(d(latency), (x) => x.p99ms)), ms(med(b(latency), (x) => x.p99ms)), delta(med(b(latency), (x) => x.p99ms) - med(d(latency), (x) => x.p99ms))],
    [`keep-alive small GET c${c}: req/s`, med(d(rps), (x) => x.rps).toFixed(0), med(b(rps), (x) => x.rps).toFixed(0), (med(b(rps), (x) => x.rps) / med(d(rps), (x) => x.rps)).toFixed(2)],
    [`keep-alive small GET c${c}: p99 ms`, ms(med(d(rps), (x) => x.p99ms)), ms(med(b(rps), (x) => x.p99ms)), (med(b(rps), (x) => x.p99ms) / med(d(rps), (x) => x.p99ms)).toFixed(2)],
    [`keep-alive small GET c${c}: proxy CPU µs/req (edge + worker)`, med(d(rps), perReq).toFixed(1), med(b(rps), perReq).toFixed(1), (med(b(rps), perReq) / med(d(rps), perReq)).toFixed(2)],
    [`new connection per request c${c}: req/s`, med(d(churn), (x) => x.rps).toFixed(0), med(b(churn), (x) => x.rps).toFixed(0), (med(b(churn), (x) => x.rps) / med(d(churn), (x) => x.rps)).toFixed(2)],
    [`${Number(args.bytes) / 1048576} MiB GET c10: MB/s`, med(d(bulk), (x) => x.mbPerSec).toFixed(0), med(b(bulk), (x) => x.mbPerSec).toFixed(0), (med(b(bulk), (x) => x.mbPerSec) / med(d(bulk), (x) => x.mbPerSec)).toFixed(2)],
    [`${Number(args.bytes) / 1048576} MiB GET c10: proxy CPU µs/MiB (edge + worker)`, med(d(bulk), perMiB).toFixed(0), med(b(bulk), perMiB).toFixed(0), (med(b(bulk), perMiB) / med(d(bulk), perMiB)).toFixed(2)],
  ]
  const errors = [...latency.values(), ...rps.values(), ...churn.values(), ...bulk.values()].flat().reduce((s, x) => s + x.errors, 0)
  console.log(`\nOne backhaul hop vs direct (issue 7): same proxy code, server side on core 0, wrk on core 1, ${rounds} interleaved rounds of ${seconds} s (medians); errors: ${errors}\n`)
  console.log(markdownTable(['measurement', 'direct', 'over the backhaul', 'backhaul vs direct'], rows))
} finally {
  for (const p of procs.reverse()) await p.stop()
  rmSync(dir, { recursive: true, force: true })
}
