import '../tools/polyfills.js'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { writeFleetKey } from '../gossip/index.js'
import { benchDir, fmt, percentile, table } from './bench-util.js'
import type { FromChild } from './gossip-child.js'
import { type BenchNode, startFleet, stopFleet, untilConverged } from './gossip-fleet.js'

/**
 * Gossip benchmark (issue 4): N daemon-like processes on loopback.
 * 1. Propagation: CHANGES app deploys from random nodes at RATE/s; for each, the time from the write until
 *    the last node emitted its `app.upserted` (goal p99 < 250 ms). Plus memory and CPU per node.
 * 2. Partition heal (a second fleet, each node behind a chaos relay): split in halves, write on both sides,
 *    heal, and time until every node has identical heads (goal < 2 s).
 * Baseline in the same machine kind: PERF-NOTES measured raw gossipsub at 5/s with 20 processes (p50 22–31 ms,
 * p99 246–385 ms, ~90 MB RSS idle); the ratio to it is what our coalescing, validation and catalog cost.
 */
const NODES = Number(process.env.BENCH_GOSSIP_NODES ?? 20)
const CHANGES = Number(process.env.BENCH_GOSSIP_CHANGES ?? 200)
const RATE = Number(process.env.BENCH_GOSSIP_RATE ?? 5)
const HEALS = Number(process.env.BENCH_GOSSIP_HEALS ?? 3)
const WRITES_PER_SIDE = 10
const FSYNC = process.env.BENCH_GOSSIP_FSYNC !== '0'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const mb = (bytes: number) => fmt(bytes / 2 ** 20)

export async function gossipBench(): Promise<string> {
  const dir = await benchDir('gossip')
  try {
    const fleetKeyPath = await writeFleetKey(join(dir.path, 'fleet'))
    const propagation = await propagationPhase(join(dir.path, 'a'), fleetKeyPath)
    const heal = HEALS > 0 ? await healPhase(join(dir.path, 'b'), fleetKeyPath) : []
    return report(propagation, heal)
  } finally {
    await dir.remove()
  }
}

interface Propagation { latencies: number[]; missing: number; rss: number[]; cpuMsPerChange: number; idleCpuShare: number; startMs: number }

async function propagationPhase(dir: string, fleetKeyPath: string): Promise<Propagation> {
  const wrote = new Map<string, number>()
  const seen = new Map<string, number[]>()
  const onMessage = (_n: BenchNode, m: FromChild): void => {
    if (m.type === 'wrote') wrote.set(m.app, m.t)
    if (m.type === 'seen') seen.set(m.app, [...(seen.get(m.app) ?? []), m.t])
  }
  const started = performance.now()
  process.stderr.write(`  starting ${NODES} nodes…\n`)
  const nodes = await startFleet({ dir, fleetKeyPath, nodes: NODES, relayed: false, fsync: FSYNC, onMessage })
  try {
    await untilConverged(nodes, 60_000)
    const startMs = performance.now() - started
    // baseline in the same run: CPU of an idle fleet (heartbeats, pings, sync rounds) over the same duration
    const idle0 = await Promise.all(nodes.map((n) => n.stats()))
    await sleep((CHANGES / RATE) * 1000)
    const cpu0 = await Promise.all(nodes.map((n) => n.stats()))
    for (let i = 0; i < CHANGES; i++) {
      nodes[Math.floor(Math.random() * nodes.length)].send({ type: 'write', app: `b-${i}` })
      if (i % Math.max(1, Math.floor(CHANGES / 10)) === 0) process.stderr.write(`  propagation: ${i}/${CHANGES}\n`)
      await sleep(1000 / RATE)
    }
    const deadline = performance.now() + 30_000
    while (performance.now() < deadline && [...Array(CHANGES).keys()].some((i) => (seen.get(`b-${i}`)?.length ?? 0) < nodes.length)) await sleep(50)
    const cpu1 = await Promise.all(nodes.map((n) => n.stats()))
    if (process.env.BENCH_GOSSIP_DIAG === '1') {
      for (const s of cpu1) process.stderr.write(`  node: ${JSON.stringify(s.gossip)}\n`)
    }
    const latencies: number[] = []
    let missing = 0
    for (let i = 0; i < CHANGES; i++) {
      const t = wrote.get(`b-${i}`)
      const s = seen.get(`b-${i}`) ?? []
      if (t === undefined || s.length < nodes.length) { missing++; continue }
      latencies.push(Math.max(...s) - t)
    }
    const busyMs = cpu1.reduce((sum, s, k) => sum + s.cpuMs - cpu0[k].cpuMs, 0)
    const idleMs = cpu0.reduce((sum, s, k) => sum + s.cpuMs - idle0[k].cpuMs, 0)
    return {
      latencies: latencies.sort((a, b) => a - b), missing, rss: cpu1.map((s) => s.rss).sort((a, b) => a - b),
      cpuMsPerChange: (busyMs - idleMs) / nodes.length / CHANGES, idleCpuShare: idleMs / nodes.length / ((CHANGES / RATE) * 1000), startMs,
    }
  } finally {
    await stopFleet(nodes)
  }
}

async function healPhase(dir: string, fleetKeyPath: string): Promise<number[]> {
  process.stderr.write(`  starting ${NODES} relayed nodes…\n`)
  const nodes = await startFleet({ dir, fleetKeyPath, nodes: NODES, relayed: true, fsync: FSYNC })
  const left = nodes.slice(0, Math.floor(nodes.length / 2))
  const right = nodes.slice(left.length)
  const heals: number[] = []
  try {
    await untilConverged(nodes, 60_000)
    for (let h = 0; h < HEALS; h++) {
      for (const n of left) n.relay!.set({ mode: 'refuse' }, { from: right.map((r) => r.ip) })
      for (const n of right) n.relay!.set({ mode: 'refuse' }, { from: left.map((l) => l.ip) })
      await sleep(500) // let the cut connections close
      for (let k = 0; k < WRITES_PER_SIDE; k++) {
        left[k % left.length].send({ type: 'write', app: `l-${h}-${k}` })
        right[k % right.length].send({ type: 'write', app: `r-${h}-${k}` })
      }
      await untilConverged(left, 30_000)
      await untilConverged(right, 30_000)
      for (const n of nodes) n.relay!.reset()
      const ms = await untilConverged(nodes, 60_000)
      heals.push(ms)
      process.stderr.write(`  heal ${h + 1}/${HEALS}: ${fmt(ms)} ms\n`)
    }
    return heals
  } finally {
    await stopFleet(nodes)
  }
}

function report(p: Propagation, heals: number[]): string {
  const lines = [
    `### Gossip: ${NODES} processes on loopback (fsync ${FSYNC ? 'on' : 'off'})`,
    '',
    `Command: \`BENCH_GOSSIP_NODES=${NODES} BENCH_GOSSIP_CHANGES=${CHANGES} BENCH_GOSSIP_RATE=${RATE} npm run bench -- gossip\``,
    '',
    table(['measure', 'result', 'goal / baseline'], [
      [`${CHANGES} deploys at ${RATE}/s from random nodes: visible on all, p50`, `${fmt(percentile(p.latencies, 50))} ms`, 'raw gossipsub 22–31 ms'],
      ['same, p99', `${fmt(percentile(p.latencies, 99))} ms`, '< 250 ms (raw gossipsub 246–385 ms)'],
      ['same, max', `${fmt(p.latencies.at(-1) ?? NaN)} ms`, ''],
      ['changes not visible everywhere within 30 s', String(p.missing), '0'],
      ['CPU per change per node, above the idle fleet measured just before', `${fmt(p.cpuMsPerChange, 2)} ms`, 'raw gossipsub 5–9 ms per message'],
      ['CPU of an idle node (heartbeats, pings, sync rounds)', `${fmt(p.idleCpuShare * 100, 1)} % of a core`, ''],
      ['RSS per node, median / max', `${mb(percentile(p.rss, 50))} / ${mb(p.rss.at(-1) ?? NaN)} MiB`, '~90 MiB idle'],
      ['fleet start until converged', `${fmt(p.startMs / 1000, 1)} s`, '10–17 s to listen'],
      ...heals.map((ms, i): Array<string | number> => [`partition heal ${i + 1}: until identical heads`, `${fmt(ms)} ms`, '< 2 s']),
    ]),
  ]
  return lines.join('\n')
}

// `npx tsx bench/gossip.ts` runs it alone, before the lead registers it in bench/index.ts
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.stdout.write(`${await gossipBench()}\n`)
}
