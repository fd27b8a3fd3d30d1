import { randomInt } from 'node:crypto'
import pino from 'pino'
import { openCatalog } from '../../catalog/index.js'
import type { Catalog } from '../../catalog/catalog-api.js'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { isRunning, processGroupMembers, readProcStat } from '../process-info.js'
import { machineSupervisor, type MachineSupervisor } from '../supervisor.js'
import type { MachineSupervisorInit } from '../supervisor-options.js'
import { writeFixtureApp } from './fixture-app.js'

export const NODE = 'ams-1'
export const testLog = pino({ level: process.env.TEST_LOG ?? 'silent' })

/**
 * A real catalog (LevelDB in a temp dir) and a real supervisor running real processes. Each harness uses
 * its own /24 of loopback and its own internal port, so test files running side by side never collide.
 */
export interface Harness {
  dir: string
  catalog: Catalog
  supervisor: MachineSupervisor
  appPath: string
  /** The internal_port this harness's apps use. */
  port: number
  range: string
  /** Every Machine pid the supervisor reported; teardown checks each one (and its group) is gone. */
  seenPids: Set<number>
  deploy(app: string, tomlBody?: string): Promise<void>
  run(app: string, env?: Record<string, string>, cmd?: string[]): Promise<MachineRecord>
  startSupervisor(init?: Partial<MachineSupervisorInit>): Promise<MachineSupervisor>
  pidOf(id: string): number | undefined
  teardown(): Promise<void>
}

export const FAST: Partial<MachineSupervisorInit> = {
  spawnGraceMs: 300,
  crashPolicy: { baseDelayMs: 100, maxDelayMs: 1000 },
  health: { readinessPollMs: 50 },
  destroyedRetentionMs: 0,
  adoptedPollMs: 100,
}

export async function harness(init: Partial<MachineSupervisorInit> = {}, options: { startSupervisor?: boolean } = {}): Promise<Harness> {
  const dir = await tempDir('edgeproxy-machines-')
  const catalog = await openCatalog({ dataDir: dir.path, nodeName: NODE })
  const appPath = await writeFixtureApp(dir.path)
  const port = randomInt(20_000, 60_000)
  const range = `127.66.${randomInt(100, 255)}.0/24`
  const seenPids = new Set<number>()
  let supervisor: MachineSupervisor | undefined
  const notePids = (): void => { for (const p of supervisor?.processes() ?? []) seenPids.add(p.pid) }
  const sub = catalog.subscribe({}, notePids)

  const h: Harness = {
    dir: dir.path,
    catalog,
    get supervisor() { return supervisor as MachineSupervisor },
    appPath,
    port,
    range,
    seenPids,
    async deploy(app, tomlBody) {
      const body = tomlBody ?? `[http_service]\ninternal_port = ${port}\n`
      await catalog.deployApp(parseAppConfigText(`app = "${app}"\nprimary_region = "ams"\n${body}`).config)
    },
    async run(app, env = {}, cmd = [process.execPath, appPath]) {
      return catalog.createMachine({ app, region: 'ams', node: NODE, spec: { cmd, env } })
    },
    async startSupervisor(extra = {}) {
      supervisor = machineSupervisor({ dataDir: dir.path, machineRange: range, ...FAST, ...init, ...extra })({ catalog, log: testLog })
      await supervisor.start()
      notePids()
      return supervisor
    },
    pidOf(id) {
      const p = supervisor?.processes().find((x) => x.machineId === id)
      if (p !== undefined) seenPids.add(p.pid)
      return p?.pid
    },
    async teardown() {
      notePids()
      sub.close()
      await supervisor?.stop()
      await catalog.close()
      const survivors = [...seenPids].flatMap((pid) => [pid, ...processGroupMembers(pid)]).filter((pid) => isRunning(readProcStat(pid)))
      for (const pid of survivors) {
        try { process.kill(pid, 'SIGKILL') } catch { /* already gone between the check and the kill */ }
      }
      await dir.remove()
      if (survivors.length > 0) throw new Error(`Machine processes left running after the test: ${[...new Set(survivors)].join(', ')}`)
    },
  }
  if (options.startSupervisor !== false) await h.startSupervisor()
  return h
}

/** Resolves with the Machine once `predicate` holds, checked on every catalog event; no polling. */
export function waitMachine(catalog: Catalog, id: string, predicate: (m: MachineRecord) => boolean, what: string, timeoutMs = 10_000): Promise<MachineRecord> {
  return new Promise((resolve, reject) => {
    let settled = false
    const check = (): void => {
      if (settled) return
      const m = catalog.getMachine(id)
      if (m !== undefined && predicate(m)) {
        settled = true
        clearTimeout(timer)
        sub.close()
        resolve(m)
      }
    }
    const timer = setTimeout(() => {
      settled = true
      sub.close()
      const m = catalog.getMachine(id)
      reject(new Error(`timed out after ${timeoutMs} ms waiting for Machine ${id} to be ${what}; now: ${m === undefined ? 'removed' : JSON.stringify({ desired: m.desired, state: m.state, reason: m.stateReason, ready: m.ready, checks: m.checks })}`))
    }, timeoutMs)
    const sub = catalog.subscribe({}, check)
    check()
  })
}

export const isStarted = (m: MachineRecord): boolean => m.state === 'started'
export const isReady = (m: MachineRecord): boolean => m.state === 'started' && m.ready

/** Resolves once the Machine is gone from the catalog. */
export function waitRemoved(catalog: Catalog, id: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const sub = catalog.subscribe({}, () => { if (catalog.getMachine(id) === undefined) done() })
    const timer = setTimeout(() => { sub.close(); reject(new Error(`timed out after ${timeoutMs} ms waiting for Machine ${id} to be removed`)) }, timeoutMs)
    function done(): void { clearTimeout(timer); sub.close(); resolve() }
    if (catalog.getMachine(id) === undefined) done()
  })
}
