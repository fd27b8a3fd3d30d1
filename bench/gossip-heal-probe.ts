import '../tools/polyfills.js'
import { join } from 'node:path'
import { writeFleetKey } from '../gossip/index.js'
import { benchDir } from './bench-util.js'
import { startFleet, stopFleet, untilConverged } from './gossip-fleet.js'

/** Dev probe: CPU profile of two nodes through a partition heal (`node dist/bench/gossip-heal-probe.js N OUTDIR`). */
const N = Number(process.argv[2] ?? 20)
const OUT = process.argv[3] ?? '/tmp/gossip-prof'
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const dir = await benchDir('gossip-heal')
try {
  const fleetKeyPath = await writeFleetKey(join(dir.path, 'fleet'))
  const nodes = await startFleet({ dir: dir.path, fleetKeyPath, nodes: N, relayed: true, fsync: true })
  try {
    await untilConverged(nodes, 60_000)
    process.stdout.write(`connections per node before the partition: ${(await Promise.all(nodes.map((n) => n.stats()))).map((s) => s.gossip.connections).join(' ')}\n`)
    const left = nodes.slice(0, N >> 1)
    const right = nodes.slice(N >> 1)
    for (const n of left) n.relay!.set({ mode: 'refuse' }, { from: right.map((r) => r.ip) })
    for (const n of right) n.relay!.set({ mode: 'refuse' }, { from: left.map((l) => l.ip) })
    await sleep(500)
    for (let k = 0; k < 10; k++) {
      left[k % left.length].send({ type: 'write', app: `l-${k}` })
      right[k % right.length].send({ type: 'write', app: `r-${k}` })
    }
    await untilConverged(left, 30_000)
    await untilConverged(right, 30_000)
    const p0 = await Promise.all(nodes.map((n) => n.stats()))
    await sleep(3000)
    const p1 = await Promise.all(nodes.map((n) => n.stats()))
    process.stdout.write(`partitioned fleet: ${(p1.reduce((t, s, i) => t + s.cpuMs - p0[i].cpuMs, 0) / 3000).toFixed(2)} cores; peers ${p1.map((s) => s.peers).join(' ')}\n`)
    const prof = Promise.all([nodes[0], nodes[N - 1]].map((n, i) => n.ask({ type: 'profile', ms: 10_000, file: join(OUT, `heal-${i}.cpuprofile`) }, 20_000)))
    const s0 = await Promise.all(nodes.map((n) => n.stats()))
    const samples: Array<{ t: number; digests: string[]; peers: number[] }> = []
    const t0 = performance.now()
    for (const n of nodes) n.relay!.reset()
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const [digests, stats] = await Promise.all([Promise.all(nodes.map((n) => n.digest())), Promise.all(nodes.map((n) => n.stats()))])
        samples.push({ t: performance.now() - t0, digests, peers: stats.map((s) => s.peers) })
        await sleep(100)
      }
    })()
    const ms = await untilConverged(nodes, 60_000)
    sampling = false
    await sampler
    const final = samples.at(-1)!.digests[0]
    const firstCross = nodes.map((_, i) => samples.find((s) => s.peers[i] > (N >> 1) - 1)?.t ?? NaN)
    const level = nodes.map((_, i) => samples.find((s) => s.digests[i] === final)?.t ?? NaN)
    const allPeers = nodes.map((_, i) => samples.find((s) => s.peers[i] >= N - 1)?.t ?? NaN)
    const f = (xs: number[]) => xs.map((x) => Math.round(x)).join(' ')
    process.stdout.write(`first cross connection at: ${f(firstCross)}\nlevel at: ${f(level)}\nall peers at: ${f(allPeers)}\n`)
    const s1 = await Promise.all(nodes.map((n) => n.stats()))
    await prof
    const cpu = s1.reduce((t, s, i) => t + s.cpuMs - s0[i].cpuMs, 0)
    const delta = (k: string) => s1.reduce((t, s, i) => t + Number(s.gossip[k]) - Number(s0[i].gossip[k]), 0)
    process.stdout.write(`connections per node after the heal: ${s1.map((s) => s.gossip.connections).join(' ')}\n`)
    const keys = ['heartbeatsReceived', 'heartbeatsNotForwarded', 'changesReceived', 'changesNotForwarded', 'syncInitiated', 'syncInSync', 'syncDocsConverged', 'dialFailures', 'handshakeFailures']
    process.stdout.write(`fleet counters: ${keys.map((k) => `${k} ${delta(k)}`).join(', ')}\n`)
    const thr = s1.reduce((t, s, i) => t + (s.gossip.droppedHeartbeats as Record<string, number>).throttled - (s0[i].gossip.droppedHeartbeats as Record<string, number>).throttled, 0)
    process.stdout.write(`heartbeats throttled ${thr}\n`)
    process.stdout.write(`healed in ${Math.round(ms)} ms; fleet CPU during it ${Math.round(cpu)} ms (${(cpu / ms).toFixed(2)} cores)\n`)
  } finally {
    await stopFleet(nodes)
  }
} finally {
  await dir.remove()
}
