import '../tools/polyfills.js'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { packageRoot } from '../tools/version.js'
import type { HealChildResult } from './catalog-heal-child.js'
import { fmt, percentile, table } from './bench-util.js'

/**
 * `npm run bench -- warm-up`: what the Automerge warm-up (catalog/automerge-warm-up.ts) saves a node's first
 * heal, and what it costs at start. Each run is a fresh process (bench/catalog-heal-child.ts: two catalogs
 * written apart, ~100 writes a side, then healed as a sync session heals them); runs without and with the
 * warm-up alternate, so that the box's drift falls on both alike.
 */
const PAIRS = Number(process.env.BENCH_WARMUP_PAIRS ?? 5)

async function child(warm: boolean): Promise<HealChildResult> {
  const { stdout } = await promisify(execFile)(process.execPath, [join('dist', 'bench', 'catalog-heal-child.js')], {
    cwd: packageRoot(), env: { ...process.env, WARM_UP: warm ? '1' : '0' }, timeout: 120_000,
  })
  return JSON.parse(stdout.trim().split('\n').pop() as string) as HealChildResult
}

const median = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 50)

const cold: HealChildResult[] = []
const warm: HealChildResult[] = []
for (let p = 0; p < PAIRS; p++) {
  process.stderr.write(`  warm-up: pair ${p + 1}/${PAIRS}\n`)
  cold.push(await child(false))
  warm.push(await child(true))
}
const cpu = (rs: HealChildResult[]) => median(rs.map((r) => r.healCpuMs))
const wall = (rs: HealChildResult[]) => median(rs.map((r) => r.healMs))
const w = warm.map((r) => r.warmUp as NonNullable<HealChildResult['warmUp']>)
process.stdout.write(`### Automerge warm-up (${PAIRS} pairs of fresh processes, medians)\n\n`)
process.stdout.write(`${table(['first heal of a node', 'CPU ms (all threads)', 'wall ms'], [
  ['without the warm-up', fmt(cpu(cold)), fmt(wall(cold))],
  ['after the warm-up', fmt(cpu(warm)), fmt(wall(warm))],
  ['ratio', `${fmt(cpu(warm) / cpu(cold), 2)}×`, `${fmt(wall(warm) / wall(cold), 2)}×`],
])}\n\n`)
process.stdout.write(`${table(['warm-up at start', 'median', 'max'], [
  ['wall ms', fmt(median(w.map((x) => x.ms))), fmt(Math.max(...w.map((x) => x.ms)))],
  ['CPU ms (all threads)', fmt(median(w.map((x) => x.cpuMs))), fmt(Math.max(...w.map((x) => x.cpuMs)))],
  ['longest event-loop block ms', fmt(median(w.map((x) => x.maxBlockMs))), fmt(Math.max(...w.map((x) => x.maxBlockMs)))],
])}\n`)
process.exit(0)
