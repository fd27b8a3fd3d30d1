import '../tools/polyfills.js'
import { join } from 'node:path'
import { writeFleetKey } from '../gossip/index.js'
import { benchDir } from './bench-util.js'
import { startFleet, stopFleet, untilConverged, untilLevel } from './gossip-fleet.js'

/**
 * Dev probe of a partition heal (`node dist/bench/gossip-heal-probe.js N OUTDIR`): per node, when its first link
 * across came back, when it held the other side's writes, when it was level. PROFILE=1: CPU profiles of two
 * nodes into OUTDIR over the heal (PROFILE=partition: over 1 s of the partition), HEAL_PROFILE_MS long (10 s);
 * TIMELINE=1: fleet CPU and counters per second; SEEN=1: when each node saw each write.
 */
const N = Number(process.argv[2] ?? 20)
const OUT = process.argv[3] ?? '/tmp/gossip-prof'
// HEAL_WRITES=0: no writes, the heal is only reconnection; the probe then watches a fixed HEAL_WATCH_MS (6 s)
const WRITES_PER_SIDE = Number(process.env.HEAL_WRITES ?? 10)
const WATCH_MS = Number(process.env.HEAL_WATCH_MS ?? 6000)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/**
 * How long the partitioned fleet's CPU is measured. Short, so that the partition lasts about as long as the bench's
 * (~3 s): over 3 s it lasted ~7 s, and with up to a heartbeat period of silence before it, the nodes' 10 s down
 * timeout fell within the heal. Every node then recorded its peers across down and up again (30–170 more writes
 * in the heal), and the probe timed another heal than the bench's.
 */
const PARTITION_WATCH_MS = 1000
const dir = await benchDir('gossip-heal')
try {
  const fleetKeyPath = await writeFleetKey(join(dir.path, 'fleet'))
  // per node, when it held the last of the partition's writes (the children report `b-` apps as they appear)
  const seenAt = new Map<string, Map<string, number>>()
  const nodes = await startFleet({
    dir: dir.path, fleetKeyPath, nodes: N, relayed: true, fsync: process.env.BENCH_GOSSIP_FSYNC !== '0',
    onMessage: (n, m) => { if (m.type === 'seen') seenAt.set(n.name, (seenAt.get(n.name) ?? new Map()).set(m.app, m.t)) },
  })
  try {
    await untilConverged(nodes, 60_000)
    process.stdout.write(`connections per node before the partition: ${(await Promise.all(nodes.map((n) => n.stats()))).map((s) => s.gossip.connections).join(' ')}\n`)
    const left = nodes.slice(0, N >> 1)
    const right = nodes.slice(N >> 1)
    for (const n of left) n.relay!.set({ mode: 'refuse' }, { from: right.map((r) => r.ip) })
    for (const n of right) n.relay!.set({ mode: 'refuse' }, { from: left.map((l) => l.ip) })
    await sleep(500)
    for (let k = 0; k < WRITES_PER_SIDE; k++) {
      left[k % left.length].send({ type: 'write', app: `b-l-${k}` })
      right[k % right.length].send({ type: 'write', app: `b-r-${k}` })
    }
    await untilConverged(left, 30_000)
    await untilConverged(right, 30_000)
    const p0 = await Promise.all(nodes.map((n) => n.stats()))
    const profPart = process.env.PROFILE === 'partition' ? Promise.all([nodes[0], nodes[N - 1]].map((n, i) => n.ask({ type: 'profile', ms: PARTITION_WATCH_MS, file: join(OUT, `part-${i}.cpuprofile`) }, 20_000))) : undefined
    await sleep(PARTITION_WATCH_MS)
    await profPart
    const p1 = await Promise.all(nodes.map((n) => n.stats()))
    process.stdout.write(`partitioned fleet: ${(p1.reduce((t, s, i) => t + s.cpuMs - p0[i].cpuMs, 0) / PARTITION_WATCH_MS).toFixed(2)} cores; peers ${p1.map((s) => s.peers).join(' ')}\n`)
    const prof = process.env.PROFILE === '1' ? Promise.all([nodes[0], nodes[N - 1]].map((n, i) => n.ask({ type: 'profile', ms: Number(process.env.HEAL_PROFILE_MS ?? 10_000), file: join(OUT, `heal-${i}.cpuprofile`) }, 20_000))) : undefined
    const s0 = await Promise.all(nodes.map((n) => n.stats()))
    const samples: Array<{ t: number; digests: string[]; peers: number[]; stats: Awaited<ReturnType<typeof nodes[0]['stats']>>[] }> = []
    const t0 = performance.now()
    const parentCpu0 = process.cpuUsage()
    const healedAtEpoch = Date.now()
    for (const n of nodes) n.relay!.reset()
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const [digests, stats] = await Promise.all([Promise.all(nodes.map((n) => n.digest())), Promise.all(nodes.map((n) => n.stats()))])
        samples.push({ t: performance.now() - t0, digests, peers: stats.map((s) => s.peers), stats })
        await sleep(100)
      }
    })()
    const heal = WRITES_PER_SIDE > 0 ? await untilLevel(nodes, healedAtEpoch, 60_000) : undefined
    const ms = heal === undefined ? await sleep(WATCH_MS).then(() => WATCH_MS) : heal.polledMs
    sampling = false
    await sampler
    const final = samples.at(-1)!.digests[0]
    const firstCross = nodes.map((_, i) => samples.find((s) => s.peers[i] > (N >> 1) - 1)?.t ?? NaN)
    const level = nodes.map((_, i) => samples.find((s) => s.digests[i] === final)?.t ?? NaN)
    const allPeers = nodes.map((_, i) => samples.find((s) => s.peers[i] >= N - 1)?.t ?? NaN)
    const f = (xs: number[]) => xs.map((x) => Math.round(x)).join(' ')
    const allWrites = nodes.map((n) => {
      const seen = seenAt.get(n.name) ?? new Map<string, number>()
      return seen.size < 2 * WRITES_PER_SIDE ? NaN : Math.max(...seen.values()) - healedAtEpoch
    })
    if (process.env.TIMELINE === '1') {
      // per second: fleet CPU and what the fleet did
      const keys = ['heartbeatsReceived', 'changesReceived', 'changesAlreadyHeld', 'changesRelayed', 'syncInitiated', 'handshakeFailures', 'syncDocsRelayed']
      const at = (sec: number) => samples.findLast((x) => x.t <= sec * 1000) ?? samples[0]
      for (let sec = 1; sec * 1000 <= samples.at(-1)!.t + 999; sec++) {
        const [a, b] = [at(sec - 1), at(sec)]
        const dt = (b.t - a.t) / 1000
        if (dt <= 0) continue
        const d = (k: string) => b.stats.reduce((t, s, i) => t + Number(s.gossip[k]) - Number(a.stats[i].gossip[k]), 0)
        const cpu = b.stats.reduce((t, s, i) => t + s.cpuMs - a.stats[i].cpuMs, 0) / 1000 / dt
        const conns = b.stats.reduce((t, s) => t + Number(s.gossip.connections), 0)
        process.stdout.write(`t=${sec}s cores ${cpu.toFixed(2)} conns ${conns} peers ${b.peers.reduce((x, y) => x + y, 0)} ${keys.map((k) => `${k} ${(d(k) / dt).toFixed(0)}/s`).join(' ')}\n`)
      }
    }
    if (process.env.SEEN === '1') {
      for (const n of nodes) {
        const seen = [...(seenAt.get(n.name) ?? new Map<string, number>())].filter(([, t]) => t >= healedAtEpoch).sort((a, b) => a[1] - b[1])
        process.stdout.write(`${n.name}: ${seen.map(([app, t]) => `${app.slice(2)}@${t - healedAtEpoch}`).join(' ')}\n`)
      }
    }
    process.stdout.write(`first cross connection at: ${f(firstCross)}\nall partition writes at: ${f(allWrites)}\nlevel at: ${f(level)}\nall peers at: ${f(allPeers)}\n`)
    const s1 = await Promise.all(nodes.map((n) => n.stats()))
    await prof
    const cpu = s1.reduce((t, s, i) => t + s.cpuMs - s0[i].cpuMs, 0)
    const delta = (k: string) => s1.reduce((t, s, i) => t + Number(s.gossip[k]) - Number(s0[i].gossip[k]), 0)
    process.stdout.write(`connections per node after the heal: ${s1.map((s) => s.gossip.connections).join(' ')}\n`)
    const keys = ['heartbeatsReceived', 'heartbeatsNotForwarded', 'forwardsSpared', 'changesReceived', 'changesNotForwarded', 'syncInitiated', 'syncInSync', 'syncDocsConverged', 'syncDocsPushed', 'dialFailures', 'handshakeFailures', 'syncDocsRelayed', 'syncRelaysTooBig', 'changesMissingDeps', 'changesRelayed', 'changesAlreadyHeld', 'redialPauses']
    process.stdout.write(`fleet counters: ${keys.map((k) => `${k} ${delta(k)}`).join(', ')}\n`)
    const thr = s1.reduce((t, s, i) => t + (s.gossip.droppedHeartbeats as Record<string, number>).throttled - (s0[i].gossip.droppedHeartbeats as Record<string, number>).throttled, 0)
    process.stdout.write(`heartbeats throttled ${thr}\n`)
    const pc = process.cpuUsage(parentCpu0)
    process.stdout.write(`parent (relays, polling) CPU during the heal: ${((pc.user + pc.system) / 1000 / ms).toFixed(2)} cores\n`)
    if (heal !== undefined) process.stdout.write(`level ${Math.round(heal.levelMs)} ms after the heal (the last node's own clock)\n`)
    process.stdout.write(`polled level in ${Math.round(ms)} ms; fleet CPU until then ${Math.round(cpu)} ms (${(cpu / ms).toFixed(2)} cores)\n`)
  } finally {
    await stopFleet(nodes)
  }
} finally {
  await dir.remove()
}
// exit explicitly: a natural end has been seen to spin at 100 % CPU in Node's handle cleanup after the fleet's
// sockets closed (it printed its results, then ran on for minutes and skewed whatever ran next)
process.exit(0)
