import { mkdir, readdir, rm } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { Subscription } from '../catalog/catalog-api.js'
import type { CatalogEvent } from '../schemas/catalog-events.js'
import { MACHINE_ID, type MachineRecord } from '../schemas/catalog-records.js'
import { AddressPool } from './address-pool.js'
import { defaultProbe, type Probe } from './health/probe.js'
import { MachineRuntime, type RuntimeContext } from './machine-runtime.js'
import { listPidRecords, liveProcessOf, machineDir, machinesRoot, type PidRecord, removePidRecord } from './pid-files.js'
import { adoptMachineProcess, terminateProcess } from './process-runner.js'
import {
  type MachineSupervisorComponents, type MachineSupervisorInit, resolveSupervisorOptions, type ResolvedSupervisorOptions,
  type SupervisorCatalog,
} from './supervisor-options.js'

export interface MachineProcessInfo {
  machineId: string
  pid: number
  /** Taken over from a previous daemon rather than spawned by this one. */
  adopted: boolean
}

export interface MachineSupervisor {
  /** Adopts or stops what a previous daemon left running, then follows the catalog. */
  start(): Promise<void>
  /** Stops every Machine per its kill_signal / kill_timeout, in parallel, and reports them stopped. */
  stop(): Promise<void>
  /** Machine processes running now (metrics, `machines ls --verbose`, tests). */
  processes(): MachineProcessInfo[]
}

/**
 * The worker's supervisor (DESIGN §5, issue 5). Stop it before the catalog closes: its last act is to
 * report every Machine stopped.
 *
 * @example
 * const machines = machineSupervisor({ dataDir })({ catalog, log: log.child({ component: 'machines' }) })
 * await machines.start()
 * // … on SIGTERM
 * await machines.stop()
 */
export function machineSupervisor(init: MachineSupervisorInit) {
  return (components: MachineSupervisorComponents): MachineSupervisor => new DefaultMachineSupervisor(components, resolveSupervisorOptions(init))
}

class DefaultMachineSupervisor implements MachineSupervisor, RuntimeContext {
  readonly catalog: SupervisorCatalog
  readonly log: Logger
  readonly probe: Probe
  readonly pool: AddressPool
  private readonly runtimes = new Map<string, MachineRuntime>()
  private readonly orphans = new Set<Promise<void>>()
  private readonly orphanIds = new Set<string>()
  private subscription: Subscription | undefined
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new'

  constructor(c: MachineSupervisorComponents, readonly options: ResolvedSupervisorOptions) {
    this.catalog = c.catalog
    this.log = c.log
    this.probe = c.probe ?? defaultProbe
    this.pool = new AddressPool(options.machineRange)
  }

  get shuttingDown(): boolean { return this.state === 'stopping' || this.state === 'stopped' }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error('machine supervisor already started')
    this.state = 'running'
    await mkdir(machinesRoot(this.options.dataDir), { recursive: true })
    const snapshot = this.catalog.snapshot()
    const mine = new Map(snapshot.machines.filter((m) => m.node === this.catalog.nodeName).map((m) => [m.id, m]))
    const adopted = await this.adoptLeftovers(mine)
    // addresses Machines already hold keep them across restarts; new ones are allocated around them
    for (const m of mine.values()) {
      if (m.privateAddr !== undefined && this.pool.addressOf(m.id) === undefined && this.pool.contains(m.privateAddr)) this.pool.acquire(m.id, m.privateAddr)
    }
    for (const m of mine.values()) this.runtimeFor(m)
    await this.removeStaleFolders(mine)
    this.subscription = this.catalog.subscribe({ fromSeq: snapshot.seq + 1 }, (event) => this.onEvent(event))
    for (const rt of this.runtimes.values()) rt.kick()
    this.log.info({ machines: mine.size, adopted, range: this.pool.cidr }, 'machine supervisor started')
  }

  async stop(): Promise<void> {
    if (this.state !== 'running') return
    this.state = 'stopping'
    this.subscription?.close()
    this.subscription = undefined
    const all = [...this.runtimes.values()]
    for (const rt of all) rt.kick()
    await Promise.all([...all.map((rt) => rt.idle()), ...this.orphans])
    this.runtimes.clear()
    this.state = 'stopped'
    this.log.info({ machines: all.length }, 'machine supervisor stopped')
  }

  processes(): MachineProcessInfo[] {
    const out: MachineProcessInfo[] = []
    for (const rt of this.runtimes.values()) {
      if (rt.pid !== undefined) out.push({ machineId: rt.id, pid: rt.pid, adopted: rt.isAdopted })
    }
    return out
  }

  forget(machineId: string): void {
    this.runtimes.delete(machineId)
  }

  private runtimeFor(record: MachineRecord): MachineRuntime {
    let rt = this.runtimes.get(record.id)
    if (rt === undefined) {
      rt = new MachineRuntime(record, this)
      this.runtimes.set(record.id, rt)
    }
    return rt
  }

  /** Level-triggered: an event only says "look at this Machine again"; the runtime reads the catalog. */
  private onEvent(event: CatalogEvent): void {
    try {
      switch (event.type) {
        case 'machine.upserted': this.touch(event.machine.id); break
        case 'machine.removed': this.touch(event.machineId); break
        case 'app.upserted':
          for (const rt of this.runtimes.values()) if (rt.app === event.app.name) rt.configChanged(event.app.config)
          break
        default: break // machine.state and health.changed are this node's own writes
      }
    } catch (err) {
      // a throwing listener would close the subscription (catalog/event-log.ts): log and keep following
      this.log.error({ err, seq: event.seq, type: event.type }, 'machine supervisor failed to handle a catalog event')
    }
  }

  private touch(machineId: string): void {
    if (this.shuttingDown) return
    const rt = this.runtimes.get(machineId)
    if (rt !== undefined) return rt.kick()
    const record = this.catalog.getMachine(machineId)
    if (record !== undefined && record.node === this.catalog.nodeName) this.runtimeFor(record).kick()
  }

  /**
   * Pid files of live processes: a Machine still ours is adopted (reconcile then stops it if it should not
   * run); any other is stopped per the kill_signal / kill_timeout its pid file recorded. No orphan survives.
   */
  private async adoptLeftovers(mine: Map<string, MachineRecord>): Promise<number> {
    let adopted = 0
    for (const found of await listPidRecords(this.options.dataDir)) {
      if (found.record === undefined) {
        this.log.warn({ machine: found.machineId, problem: found.problem }, 'ignoring unusable machine pid file')
        continue
      }
      const live = liveProcessOf(found.record)
      if (live === undefined) {
        await removePidRecord(this.options.dataDir, found.machineId)
        continue
      }
      const record = mine.get(found.machineId)
      if (record !== undefined && record.state !== 'destroyed') {
        await this.runtimeFor(record).adopt(found.record, live)
        adopted++
      } else {
        this.stopOrphan(found.record)
      }
    }
    return adopted
  }

  private stopOrphan(pid: PidRecord): void {
    const key = `orphan:${pid.machineId}` // holds its address until it is gone
    this.orphanIds.add(pid.machineId)
    if (this.pool.contains(pid.privateAddr)) this.pool.acquire(key, pid.privateAddr)
    this.log.warn({ machine: pid.machineId, pid: pid.pid, signal: pid.killSignal }, 'stopping a machine process this node no longer hosts')
    const proc = adoptMachineProcess(pid.pid, pid.startTime, pid.spawnedAt, this.options.adoptedPollMs)
    const done = terminateProcess(proc, { signal: pid.killSignal, timeoutMs: pid.killTimeoutMs })
      .then(() => rm(machineDir(this.options.dataDir, pid.machineId), { recursive: true, force: true }))
      .catch((err) => this.log.error({ err, machine: pid.machineId, pid: pid.pid }, 'failed to stop an orphaned machine process'))
      .finally(() => {
        this.pool.release(key)
        this.orphanIds.delete(pid.machineId)
        this.orphans.delete(done)
      })
    this.orphans.add(done)
  }

  /** Folders of Machines this node no longer hosts and that run nothing (logs of a Machine moved or removed). */
  private async removeStaleFolders(mine: Map<string, MachineRecord>): Promise<void> {
    const ids = (await readdir(machinesRoot(this.options.dataDir))).filter((n) => MACHINE_ID.test(n))
    for (const id of ids) {
      if (mine.has(id) || this.orphanIds.has(id)) continue
      await rm(machineDir(this.options.dataDir, id), { recursive: true, force: true })
    }
  }
}
