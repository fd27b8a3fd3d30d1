import '../tools/polyfills.js'
import { join } from 'node:path'
import { writeFleetKey } from '../gossip/index.js'
import { benchDir } from './bench-util.js'
import { startFleet, stopFleet, untilConverged, untilMeshed } from './gossip-fleet.js'

/** Dev probe: an idle fleet's CPU per node, and CPU profiles of two nodes (`node dist/bench/gossip-idle-probe.js N SECONDS OUTDIR`). */
const N = Number(process.argv[2] ?? 20)
const SECONDS = Number(process.argv[3] ?? 20)
const OUT = process.argv[4] ?? '/tmp/gossip-prof'
const dir = await benchDir('gossip-idle')
try {
  const fleetKeyPath = await writeFleetKey(join(dir.path, 'fleet'))
  const nodes = await startFleet({ dir: dir.path, fleetKeyPath, nodes: N, relayed: false, fsync: process.env.BENCH_GOSSIP_FSYNC !== '0' })
  try {
    await untilConverged(nodes, 60_000)
    await untilMeshed(nodes, Math.min(N - 1, 5), 60_000)
    await new Promise((r) => setTimeout(r, 5_000))
    const s0 = await Promise.all(nodes.map((n) => n.stats()))
    await Promise.all(nodes.slice(0, 2).map((n, i) => n.ask({ type: 'profile', ms: SECONDS * 1000, file: join(OUT, `idle-${i}.cpuprofile`) }, SECONDS * 1000 + 10_000)))
    const s1 = await Promise.all(nodes.map((n) => n.stats()))
    const shares = s1.map((s, k) => (s.cpuMs - s0[k].cpuMs) / (SECONDS * 10)).sort((a, b) => a - b)
    process.stdout.write(`idle CPU % of a core per node: median ${shares[shares.length >> 1].toFixed(2)} max ${shares.at(-1)!.toFixed(2)}\n`)
    const delta = (k: string) => s1.reduce((sum, s, i) => sum + Number(s.gossip[k]) - Number(s0[i].gossip[k]), 0)
    const keys = ['heartbeatsReceived', 'heartbeatsNotForwarded', 'changesReceived', 'syncInitiated', 'syncInSync', 'dialFailures']
    process.stdout.write(`fleet counters over the window: ${keys.map((k) => `${k} ${delta(k)}`).join(', ')}\n`)
    // busy: writes at 5/s from random nodes while node 0 and 1 are profiled
    const b0 = await Promise.all(nodes.map((n) => n.stats()))
    const prof = Promise.all(nodes.slice(0, 2).map((n, i) => n.ask({ type: 'profile', ms: SECONDS * 1000, file: join(OUT, `busy-${i}.cpuprofile`) }, SECONDS * 1000 + 10_000)))
    for (let i = 0; i < SECONDS * 5; i++) {
      nodes[2 + Math.floor(Math.random() * (nodes.length - 2))].send({ type: 'write', app: `b-${i}` })
      await new Promise((r) => setTimeout(r, 200))
    }
    await prof
    const b1 = await Promise.all(nodes.map((n) => n.stats()))
    const busy = b1.map((s, k) => (s.cpuMs - b0[k].cpuMs) / (SECONDS * 10)).sort((a, b) => a - b)
    process.stdout.write(`busy CPU % of a core per node: median ${busy[busy.length >> 1].toFixed(2)} max ${busy.at(-1)!.toFixed(2)}\n`)
    const bdelta = (k: string) => b1.reduce((sum, s, i) => sum + Number(s.gossip[k]) - Number(b0[i].gossip[k]), 0)
    process.stdout.write(`busy fleet counters: ${[...keys, 'syncDocsConverged', 'changesNotForwarded'].map((k) => `${k} ${bdelta(k)}`).join(', ')}\n`)
  } finally {
    await stopFleet(nodes)
  }
} finally {
  await dir.remove()
}
// exit explicitly: a natural end has been seen to spin at 100 % CPU in Node's handle cleanup after the fleet's
// sockets closed (it printed its results, then ran on for minutes and skewed whatever ran next)
process.exit(0)
