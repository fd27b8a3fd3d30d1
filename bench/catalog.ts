import '../tools/polyfills.js'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Level } from 'level'
import { openCatalog } from '../catalog/index.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import { benchDir, fmt, pool, table } from './bench-util.js'

/**
 * Catalog benchmark (issue 3): Machine upserts across apps, cold open of a large data dir, replay rate.
 * Baseline in the same run: raw LevelDB batches of the same byte volume, so that the ratio shows what
 * Automerge, validation and event diffing cost on top of the storage engine.
 */
const APPS = Number(process.env.BENCH_APPS ?? 1000)
const UPSERTS = Number(process.env.BENCH_UPSERTS ?? 10_000)
const BIG_APPS = Number(process.env.BENCH_BIG_APPS ?? 10_000)
const BIG_MACHINES_PER_APP = Number(process.env.BENCH_BIG_MPA ?? 10)
const CONCURRENCY = 64

const config = (name: string) => parseAppConfigText(`app = "${name}"\nprimary_region = "ams"\n[http_service]\ninternal_port = 8080\n`).config

async function upserts(sync: boolean): Promise<{ changesPerSec: number; eventsPerSec: number; bytes: number }> {
  const dir = await benchDir('upserts')
  const catalog = await openCatalog({ dataDir: dir.path, nodeName: 'bench-1', sync })
  try {
    await pool(Array.from({ length: APPS }, (_, i) => i), CONCURRENCY, async (i) => { await catalog.deployApp(config(`app${i}`)) })
    const seq0 = catalog.lastSeq
    const started = process.hrtime.bigint()
    await pool(Array.from({ length: UPSERTS }, (_, i) => i), CONCURRENCY, async (i) => {
      await catalog.createMachine({ app: `app${i % APPS}`, region: 'ams', node: 'bench-1', spec: { cmd: ['node', 'server.js'], env: { I: String(i) } } })
    })
    const s = Number(process.hrtime.bigint() - started) / 1e9
    return { changesPerSec: UPSERTS / s, eventsPerSec: (catalog.lastSeq - seq0) / s, bytes: 0 }
  } finally {
    await catalog.close()
    await dir.remove()
  }
}

/** The storage engine alone: one batch per write with a change-sized value, a view-sized value and an event. */
async function rawLevel(sync: boolean): Promise<number> {
  const dir = await benchDir('raw')
  const db = new Level<string, Buffer>(dir.path, { keyEncoding: 'utf8', valueEncoding: 'buffer' })
  await db.open()
  const change = Buffer.alloc(220, 1)
  const view = Buffer.alloc(3900, 2)
  const event = Buffer.alloc(900, 3)
  try {
    const started = process.hrtime.bigint()
    await pool(Array.from({ length: UPSERTS }, (_, i) => i), CONCURRENCY, async (i) => {
      await db.batch([
        { type: 'put', key: `chg/app:app${i % APPS}/${String(i).padStart(16, '0')}`, value: change },
        { type: 'put', key: `view/app:app${i % APPS}`, value: view },
        { type: 'put', key: `evt/${String(i).padStart(16, '0')}`, value: event },
      ], { sync })
    })
    return UPSERTS / (Number(process.hrtime.bigint() - started) / 1e9)
  } finally {
    await db.close()
    await dir.remove()
  }
}

async function coldOpen(): Promise<{ ms: number; rss: number; apps: number; machines: number; events: number; replayMs: number; buildS: number }> {
  const dir = await benchDir('cold')
  try {
    const build = process.hrtime.bigint()
    const catalog = await openCatalog({ dataDir: dir.path, nodeName: 'bench-1', sync: false })
    await pool(Array.from({ length: BIG_APPS }, (_, i) => i), CONCURRENCY, async (i) => {
      await catalog.deployApp(config(`app${i}`))
      for (let m = 0; m < BIG_MACHINES_PER_APP; m++) await catalog.createMachine({ app: `app${i}`, region: 'ams', node: 'bench-1', spec: { cmd: ['node', 'server.js'] } })
      if (i % Math.max(1, Math.floor(BIG_APPS / 10)) === 0) process.stderr.write(`  building data dir: ${i}/${BIG_APPS} apps\n`)
    })
    await catalog.close()
    const buildS = Number(process.hrtime.bigint() - build) / 1e9
    const child = join(import.meta.dirname, 'catalog-open-child.js')
    const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', child, dir.path], { maxBuffer: 1 << 20 })
    return { ...(JSON.parse(stdout) as { ms: number; rss: number; apps: number; machines: number; events: number; replayMs: number }), buildS }
  } finally {
    await dir.remove()
  }
}

export async function catalogBench(): Promise<string> {
  const out: string[] = ['## Catalog', '']
  const rows: Array<Array<string | number>> = []
  for (const sync of [true, false]) {
    const raw = await rawLevel(sync)
    const ours = await upserts(sync)
    rows.push([`fsync ${sync ? 'on' : 'off'}`, fmt(ours.changesPerSec), fmt(ours.eventsPerSec), fmt(raw), fmt(ours.changesPerSec / raw, 2)])
  }
  out.push(`${fmt(UPSERTS)} Machine upserts across ${fmt(APPS)} apps, ${CONCURRENCY} writers in flight (group commit):`, '')
  out.push(table(['durability', 'changes/s', 'events/s', 'raw LevelDB batches/s (baseline)', 'ratio'], rows), '')
  const cold = await coldOpen()
  out.push(`Cold open of a data dir with ${fmt(cold.apps)} apps / ${fmt(cold.machines)} Machines (built in ${fmt(cold.buildS, 1)} s), in a fresh process:`, '')
  out.push(table(['measure', 'result', 'goal'], [
    ['open time', `${fmt(cold.ms / 1000, 2)} s`, '< 5 s'],
    ['RSS after open', `${fmt(cold.rss / 2 ** 20)} MiB`, '< 1024 MiB'],
    ['subscribe replay from seq 1', `${fmt(cold.events / (cold.replayMs / 1000))} events/s (${fmt(cold.events)} events)`, '-'],
  ]), '')
  return out.join('\n')
}
