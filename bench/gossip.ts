import '../tools/polyfills.js'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { openCatalog } from '../catalog/index.js'
import { writeFleetKey } from '../gossip/index.js'
import { encodeWire } from '../gossip/wire-codec.js'
import type { ChangesMessage } from '../schemas/gossip-messages.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import { benchDir, fmt, percentile, table } from './bench-util.js'
import type { FromChild } from './gossip-child.js'
import { type BenchNode, startFleet, stopFleet, untilConverged, untilLevel, untilMeshed } from './gossip-fleet.js'

/**
 * Gossip benchmark (issue 4): N daemon-like processes on loopback.
 * 1. Propagation: CHANGES app deploys from random nodes at RATE/s; for each, the time from the write until
 *    the last node emitted its `app.upserted` (goal p99 < 250 ms). Plus memory and CPU per node.
 * 2. Partition heal (a second fleet, each node behind a chaos relay): split in halves, write on both sides,
 *    heal, and time until every node has identical heads (goal < 2 s).
 * Baseline in the same run (issue 11): phase 1 first with bare libp2p + gossipsub nodes (gossip-raw-child.ts, our
 * transport and gossipsub settings, same N, CHANGES and RATE, messages of our size); every figure is reported as
 * ours / raw: the ratio is what our catalog, validation, heartbeats and sync cost. Raw gossipsub cannot heal a
 * partition (no history), so phase 2's baseline is its goal.
 */
const NODES = Number(process.env.BENCH_GOSSIP_NODES ?? 20)
const CHANGES = Number(process.env.BENCH_GOSSIP_CHANGES ?? 200)
const RATE = Number(process.env.BENCH_GOSSIP_RATE ?? 5)
const HEALS = Number(process.env.BENCH_GOSSIP_HEALS ?? 3)
const WRITES_PER_SIDE = 10
/** Deploys made and waited for before measuring, so that the first ones do not measure JIT and first-use costs. */
const WARMUP = Number(process.env.BENCH_GOSSIP_WARMUP ?? 40)
const FSYNC = process.env.BENCH_GOSSIP_FSYNC !== '0'
/** Mesh peers every node must have before measuring: gossipsub's Dlo at our default degree 6, or all others in a small fleet. */
const MIN_MESH_PEERS = Math.min(NODES - 1, Math.max(1, Number(process.env.BENCH_GOSSIP_MESH ?? 6) - 1))
const HEAL_GOAL_MS = 2_000

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const mb = (bytes: number) => fmt(bytes / 2 ** 20)

export async function gossipBench(): Promise<string> {
  const dir = await benchDir('gossip')
  try {
    const fleetKeyPath = await writeFleetKey(join(dir.path, 'fleet'))
    const payloadBytes = await changesMessageBytes(join(dir.path, 'probe'))
    // the baseline first, then ours, with the same N, CHANGES and RATE on the same machine
    process.stderr.write(`  baseline: raw gossipsub, ${payloadBytes}-byte messages\n`)
    // BENCH_GOSSIP_RAW=0 skips the baseline while iterating on ours (the report then has no ratios)
    const raw = process.env.BENCH_GOSSIP_RAW === '0' ? NO_BASELINE : await propagationPhase('raw', join(dir.path, 'raw'), fleetKeyPath, payloadBytes)
    process.stderr.write('  edgeproxy gossip\n')
    const ours = await propagationPhase('edgeproxy', join(dir.path, 'a'), fleetKeyPath, payloadBytes)
    const heal = HEALS > 0 ? await healPhase(join(dir.path, 'b'), fleetKeyPath) : []
    return report(ours, raw, heal, payloadBytes)
  } finally {
    await dir.remove()
  }
}

/** Bytes of the changes message one benchmark deploy publishes (a new app's first Automerge change, wire-encoded). */
async function changesMessageBytes(dataDir: string): Promise<number> {
  const catalog = await openCatalog({ dataDir, nodeName: 'n01', sync: false })
  try {
    const messages: number[] = []
    const sub = catalog.onLocalChange((docId, changes) => { messages.push(encodeWire({ v: 1, docId, changes } satisfies ChangesMessage).byteLength) })
    await catalog.deployApp(parseAppConfigText(`app = "b-${CHANGES >> 1}"\nprimary_region = "ams"\n[http_service]\ninternal_port = 8080\n`).config)
    await sleep(100) // a local change is reported once durable, which may be after deployApp resolved
    sub.close()
    if (messages.length !== 1) throw new Error(`one deploy made ${messages.length} changes messages; the baseline assumes one`)
    return messages[0]
  } finally {
    await catalog.close()
  }
}

interface Propagation { latencies: number[]; missing: number; rss: number[]; cpuMsPerChange: number; idleCpuShare: number; startMs: number }
const NO_BASELINE: Propagation = { latencies: [], missing: NaN, rss: [], cpuMsPerChange: NaN, idleCpuShare: NaN, startMs: NaN }

/**
 * `edgeproxy`: daemon-like nodes (gossip-child.ts), started until their catalogs converged. `raw`: bare libp2p +
 * gossipsub nodes with our settings (gossip-raw-child.ts), each dialling every earlier one. Both wait for a
 * gossipsub mesh on every node before the idle measurement and the writes.
 */
async function propagationPhase(kind: 'edgeproxy' | 'raw', dir: string, fleetKeyPath: string, payloadBytes: number): Promise<Propagation> {
  const wrote = new Map<string, number>()
  const seen = new Map<string, number[]>()
  const onMessage = (_n: BenchNode, m: FromChild): void => {
    if (m.type === 'wrote') wrote.set(m.app, m.t)
    if (m.type === 'seen') seen.set(m.app, [...(seen.get(m.app) ?? []), m.t])
  }
  const started = performance.now()
  process.stderr.write(`  starting ${NODES} nodes…\n`)
  const nodes = await startFleet({
    dir, fleetKeyPath, nodes: NODES, relayed: false, fsync: FSYNC, onMessage,
    ...(kind === 'raw' ? { script: 'gossip-raw-child', childConfig: { payloadBytes }, dialEarlier: true } as const : {}),
  })
  try {
    if (kind === 'edgeproxy') await untilConverged(nodes, 60_000)
    await untilMeshed(nodes, MIN_MESH_PEERS, 60_000)
    const startMs = performance.now() - started
    for (let i = 0; i < WARMUP; i++) {
      nodes[Math.floor(Math.random() * nodes.length)].send({ type: 'write', app: `b-warmup-${i}` })
      await sleep(1000 / RATE)
    }
    const warmDeadline = performance.now() + 30_000
    while (performance.now() < warmDeadline && [...Array(WARMUP).keys()].some((i) => (seen.get(`b-warmup-${i}`)?.length ?? 0) < nodes.length)) await sleep(50)
    // CPU of an idle fleet over the same duration as the writes: subtracted from the busy figure
    const idle0 = await Promise.all(nodes.map((n) => n.stats()))
    await sleep((CHANGES / RATE) * 1000)
    const cpu0 = await Promise.all(nodes.map((n) => n.stats()))
    for (let i = 0; i < CHANGES; i++) {
      nodes[Math.floor(Math.random() * nodes.length)].send({ type: 'write', app: `b-${i}` })
      if (i % Math.max(1, Math.floor(CHANGES / 10)) === 0) process.stderr.write(`  propagation (${kind}): ${i}/${CHANGES}\n`)
      await sleep(1000 / RATE)
    }
    const deadline = performance.now() + 30_000
    while (performance.now() < deadline && [...Array(CHANGES).keys()].some((i) => (seen.get(`b-${i}`)?.length ?? 0) < nodes.length)) await sleep(50)
    const cpu1 = await Promise.all(nodes.map((n) => n.stats()))
    if (process.env.BENCH_GOSSIP_DIAG === '1') {
      for (const s of cpu1) process.stderr.write(`  ${kind} node: ${JSON.stringify(s.gossip)}\n`)
    }
    const latencies: number[] = []
    let missing = 0
    for (let i = 0; i < CHANGES; i++) {
      const t = wrote.get(`b-${i}`)
      const s = seen.get(`b-${i}`) ?? []
      if (t === undefined || s.length < nodes.length) { missing++; continue }
      latencies.push(Math.max(...s) - t)
    }
    if (process.env.BENCH_GOSSIP_DIAG === '1') {
      // which writes were slow, and which node saw them last
      const slow = [...Array(CHANGES).keys()].map((i) => ({ i, t: wrote.get(`b-${i}`), s: seen.get(`b-${i}`) ?? [] }))
        .filter((x) => x.t !== undefined && x.s.length === nodes.length).map((x) => ({ i: x.i, ms: Math.max(...x.s) - x.t!, spread: Math.max(...x.s) - Math.min(...x.s) }))
        .sort((a, b) => b.ms - a.ms).slice(0, 8)
      process.stderr.write(`  ${kind} slowest writes: ${slow.map((x) => `#${x.i} ${x.ms} ms (first to last node ${x.spread} ms)`).join(', ')}\n`)
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
      const healedAt = Date.now()
      for (const n of nodes) n.relay!.reset()
      const diag = process.env.BENCH_GOSSIP_DIAG === '1' ? healDiagnosis(nodes) : undefined
      const { levelMs, polledMs } = await untilLevel(nodes, healedAt, 60_000)
      if (diag !== undefined) process.stderr.write(`  heal ${h + 1}: ${await diag.stop()}\n`)
      heals.push(levelMs)
      process.stderr.write(`  heal ${h + 1}/${HEALS}: ${fmt(levelMs)} ms (first seen by the bench's poll at ${fmt(polledMs)} ms)\n`)
    }
    return heals
  } finally {
    await stopFleet(nodes)
  }
}

/** BENCH_GOSSIP_DIAG=1: when every node was connected to every other again, and sync sessions on the way. */
function healDiagnosis(nodes: BenchNode[]): { stop(): Promise<string> } {
  const started = performance.now()
  let connectedAt: number | undefined
  let running = true
  const before = Promise.all(nodes.map((n) => n.stats()))
  const loop = (async () => {
    while (running && connectedAt === undefined) {
      const stats = await Promise.all(nodes.map((n) => n.stats()))
      if (stats.every((s) => s.peers >= nodes.length - 1)) connectedAt = performance.now() - started
      else await sleep(100)
    }
  })()
  return {
    async stop() {
      running = false
      await loop
      const [b, a] = [await before, await Promise.all(nodes.map((n) => n.stats()))]
      const sum = (k: string) => a.reduce((t, s, i) => t + Number(s.gossip[k]) - Number(b[i].gossip[k]), 0)
      return `all connected after ${connectedAt === undefined ? 'never' : `${fmt(connectedAt)} ms`}; sessions ${sum('syncInitiated')} ` +
        `(in sync ${sum('syncInSync')}, failed ${sum('syncFailed')}, throttled ${sum('syncThrottled')}), docs converged ${sum('syncDocsConverged')}, dial failures ${sum('dialFailures')}, ` +
        `redial pauses ${sum('redialPauses')} (${a.filter((s, i) => Number(s.gossip.redialPauses) > Number(b[i].gossip.redialPauses)).length} nodes)`
    },
  }
}

function report(p: Propagation, raw: Propagation, heals: number[], payloadBytes: number): string {
  const ratio = (ours: number, base: number): string => (Number.isFinite(ours / base) ? `${fmt(ours / base, 2)}×` : '–')
  const ms = (n: number, digits = 0): string => `${fmt(n, digits)} ms`
  const p50 = [percentile(p.latencies, 50), percentile(raw.latencies, 50)]
  const p99 = [percentile(p.latencies, 99), percentile(raw.latencies, 99)]
  const max = [p.latencies.at(-1) ?? NaN, raw.latencies.at(-1) ?? NaN]
  const rss = [percentile(p.rss, 50), percentile(raw.rss, 50)]
  const lines = [
    `### Gossip: ${NODES} processes on loopback (fsync ${FSYNC ? 'on' : 'off'}), against raw gossipsub in the same run`,
    '',
    `Command: \`BENCH_GOSSIP_NODES=${NODES} BENCH_GOSSIP_CHANGES=${CHANGES} BENCH_GOSSIP_RATE=${RATE} BENCH_GOSSIP_HEALS=${HEALS} npm run bench -- gossip\` ` +
      `(${WARMUP} deploys first, not measured, in both fleets: BENCH_GOSSIP_WARMUP)`,
    '',
    `Baseline: the same ${NODES} processes as bare libp2p nodes with our transport stack and gossipsub settings ` +
      `(bench/gossip-raw-child.ts: fleet key, Noise, Yamux, mesh degree, scoring, async validation accepted at once), ` +
      `each connected to every other, publishing one ${payloadBytes}-byte message per deploy (the size of our changes ` +
      'message for one) — no catalog, anti-entropy, heartbeats or closeness pings. It ran first, then ours; ratios are ours / raw.',
    '',
    table(['measure', 'edgeproxy', 'raw gossipsub', 'ratio', 'goal'], [
      [`${CHANGES} deploys at ${RATE}/s from random nodes: visible on all, p50`, ms(p50[0]), ms(p50[1]), ratio(p50[0], p50[1]), ''],
      ['same, p99', ms(p99[0]), ms(p99[1]), ratio(p99[0], p99[1]), '< 250 ms'],
      ['same, max', ms(max[0]), ms(max[1]), ratio(max[0], max[1]), ''],
      ['changes not visible everywhere within 30 s', p.missing, raw.missing, '', '0'],
      ['CPU per change per node, above the idle fleet measured just before', ms(p.cpuMsPerChange, 2), ms(raw.cpuMsPerChange, 2), ratio(p.cpuMsPerChange, raw.cpuMsPerChange), ''],
      ['CPU of an idle node, % of a core (ours: heartbeats 2 s, pings 5 s, sync only with peers that differ; raw: gossipsub heartbeat 1 s)',
        fmt(p.idleCpuShare * 100, 2), fmt(raw.idleCpuShare * 100, 2), ratio(p.idleCpuShare, raw.idleCpuShare), ''],
      ['RSS per node after the writes, median / max (ratio of medians)', `${mb(rss[0])} / ${mb(p.rss.at(-1) ?? NaN)} MiB`, `${mb(rss[1])} / ${mb(raw.rss.at(-1) ?? NaN)} MiB`, ratio(rss[0], rss[1]), ''],
      ['fleet start until meshed (ours: and converged)', `${fmt(p.startMs / 1000, 1)} s`, `${fmt(raw.startMs / 1000, 1)} s`, ratio(p.startMs, raw.startMs), ''],
      ...heals.map((h, i): Array<string | number> => [
        `partition heal ${i + 1}: until identical heads`, ms(h), 'no heal: gossipsub keeps no history', `${fmt(h / HEAL_GOAL_MS, 2)}× the goal`, '< 2 s',
      ]),
    ]),
  ]
  return lines.join('\n')
}

// `npx tsx bench/gossip.ts` runs it alone, before the lead registers it in bench/index.ts
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.stdout.write(`${await gossipBench()}\n`)
}
