import '../tools/polyfills.js'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { type Catalog, openCatalog, warmUpAutomerge } from '../catalog/index.js'
import type { DocId } from '../schemas/catalog-records.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import { benchDir } from './bench-util.js'

/**
 * One heal of two catalogs written apart, in a fresh process (V8 starts with no optimized code), for
 * bench/warm-up.ts. With WARM_UP=1 the Automerge warm-up runs first, as the daemon runs it after start.
 * Prints one JSON line: the heal's CPU (all threads: V8 compiles on background threads) and wall time,
 * and what the warm-up cost.
 */
export interface HealChildResult {
  healCpuMs: number
  healMs: number
  /** cpuMs: the warm-up and the settle time after it, while V8 finishes the compiles it queued. */
  warmUp?: { ms: number; cpuMs: number; maxBlockMs: number }
}

const WRITES_PER_SIDE = Number(process.env.HEAL_WRITES_PER_SIDE ?? 100)
/** Long enough for V8's background compiles queued by the phase before to finish, in both arms alike. */
const SETTLE_MS = 1500

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const toml = (app: string, env: string) => `app = "${app}"\nprimary_region = "ams"\n[env]\nWRITER = "${env}"\n[http_service]\ninternal_port = 8080\n`
const config = (app: string, env = '') => parseAppConfigText(toml(app, env)).config
const cpuMs = (): number => { const c = process.cpuUsage(); return (c.user + c.system) / 1000 }

const dir = await benchDir('catalog-heal')
const left = await openCatalog({ dataDir: `${dir.path}/left`, nodeName: 'left-1', sync: false })
const right = await openCatalog({ dataDir: `${dir.path}/right`, nodeName: 'right-1', sync: false })
try {
  const result: HealChildResult = { healCpuMs: 0, healMs: 0 }
  if (process.env.WARM_UP === '1') {
    const loop = monitorEventLoopDelay({ resolution: 5 })
    loop.enable()
    const cpu0 = cpuMs()
    const r = await warmUpAutomerge()
    loop.disable()
    await sleep(SETTLE_MS)
    result.warmUp = { ms: r.ms, cpuMs: cpuMs() - cpu0, maxBlockMs: loop.max / 1e6 }
  }

  // a shared start: one app with Machines on both sides, then written apart (a partition) at a control plane's pace
  await left.deployApp(config('shared', 'start'))
  const shared = []
  for (let m = 0; m < 5; m++) shared.push(await left.createMachine({ app: 'shared', region: 'ams', node: 'left-1', spec: { cmd: ['true'], env: {} } }))
  await heal(left, right)
  for (let k = 0; k < WRITES_PER_SIDE; k++) {
    for (const [side, catalog] of [['left', left], ['right', right]] as const) {
      switch (k % 5) {
        case 0: await catalog.deployApp(config(`${side}-app-${k}`, side)); break
        case 1: await catalog.deployApp(config('shared', `${side}-${k}`)); break
        case 2: await catalog.createMachine({ app: 'shared', region: 'ams', node: `${side}-1`, spec: { cmd: ['true'], env: {} } }); break
        default: await catalog.setDesiredState(shared[k % shared.length].id, k % 2 === 0 ? 'suspended' : 'stopped', `${side} ${k}`)
      }
    }
  }
  await sleep(SETTLE_MS)

  const cpu0 = cpuMs()
  const t0 = performance.now()
  await heal(left, right)
  result.healMs = performance.now() - t0
  result.healCpuMs = cpuMs() - cpu0
  if (Buffer.compare(left.digestHash(), right.digestHash()) !== 0) throw new Error('the two catalogs still differ after the heal')
  process.stdout.write(`${JSON.stringify(result)}\n`)
} finally {
  await left.close()
  await right.close()
  await dir.remove()
}
process.exit(0)

/**
 * What a gossip sync session does between two nodes (gossip/sync-protocol.ts), without the network: a side
 * ahead on a document pushes exactly the changes the other lacks; a document written on both sides runs
 * Automerge's sync rounds.
 */
async function heal(a: Catalog, b: Catalog): Promise<void> {
  const da = a.digest()
  const db = b.digest()
  const docs = new Set<DocId>([...da.keys(), ...db.keys()])
  for (const docId of docs) {
    const ha = da.get(docId)
    const hb = db.get(docId)
    if (ha !== undefined && hb !== undefined && ha.join() === hb.join()) continue
    // undefined: this side does not hold all of the other's heads (it lacks the document, or both wrote to it)
    const toB = ha === undefined ? undefined : await a.changesForPeer(docId, hb)
    const toA = hb === undefined ? undefined : await b.changesForPeer(docId, ha)
    if (toB === undefined && toA === undefined) await rounds(a, b, docId)
    if (toB !== undefined && toB.length > 0) await b.applyRemoteChanges(docId, toB, 'left-1', 'background')
    if (toA !== undefined && toA.length > 0) await a.applyRemoteChanges(docId, toA, 'right-1', 'background')
  }
}

async function rounds(a: Catalog, b: Catalog, docId: DocId): Promise<void> {
  const sa = a.newSyncState(docId)
  const sb = b.newSyncState(docId)
  for (let k = 0; k < 20; k++) {
    const fromA = await a.generateSyncMessage(sa)
    if (fromA !== null) await b.receiveSyncMessage(sb, fromA, 'left-1')
    const fromB = await b.generateSyncMessage(sb)
    if (fromB !== null) await a.receiveSyncMessage(sa, fromB, 'right-1')
    if (fromA === null && fromB === null) return
  }
  throw new Error(`${docId} did not converge in 20 sync rounds`)
}
