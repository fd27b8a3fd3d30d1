import { rm } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { AppConfig } from '../schemas/app-config.js'
import type { MachineRecord, MachineState } from '../schemas/catalog-records.js'
import { EdgeProxyError, type ErrorCode } from '../schemas/errors.js'
import type { AddressPool } from './address-pool.js'
import { CrashTracker } from './backoff.js'
import { seconds } from './exit-reasons.js'
import { planMachineChecks } from './health/check-plan.js'
import { type CheckChange, type HealthState, MachineHealth } from './health/machine-health.js'
import type { Probe } from './health/probe.js'
import { MachineLog } from './logs/machine-log.js'
import { resolveMachineCommand } from './machine-command.js'
import { buildMachineEnv } from './machine-env.js'
import { flycastHostsPath } from './flycast-hosts.js'
import { type InstanceDeps, MachineInstance } from './machine-instance.js'
import { MachineReporter } from './machine-reporter.js'
import { machineDir, type PidRecord } from './pid-files.js'
import type { ProcStat } from './process-info.js'
import type { ExitInfo } from './process-runner.js'
import type { ResolvedSupervisorOptions, SupervisorCatalog } from './supervisor-options.js'

export interface RuntimeContext {
  readonly options: ResolvedSupervisorOptions
  readonly catalog: SupervisorCatalog
  readonly pool: AddressPool
  readonly probe: Probe
  readonly log: Logger
  readonly shuttingDown: boolean
  /** The Machine is gone from this node (removed, or moved to another node): drop its runtime. */
  forget(machineId: string): void
}

/** Which request a failure answered: a new start request (new reason or time) retries a failed Machine. */
const requestKey = (m: MachineRecord): string => `${m.desiredAt}|${m.desiredReason}`

/**
 * One Machine on this node: drives what runs (its process, checks, log) toward what the catalog asks
 * (desired) and reports what it sees (observed state, health). Every change of state happens inside one
 * serialized step, triggered by kick() — a catalog event, a process exit, a timer or readiness — so the
 * step is level-triggered and idempotent: it looks at desired vs. current and does the next thing.
 */
export class MachineRuntime {
  readonly id: string
  private record: MachineRecord
  private config: AppConfig | undefined
  /** The running process, while there is one. */
  private instance: MachineInstance | undefined
  private pendingExit: { instance: MachineInstance; exit: ExitInfo } | undefined
  private readonly machineLog: MachineLog
  private readonly crashes: CrashTracker
  private failedFor: string | undefined
  private restartTimer: NodeJS.Timeout | undefined
  private restartReason: string | undefined
  private graceTimer: NodeJS.Timeout | undefined
  private removalTimer: NodeJS.Timeout | undefined
  private startReason = ''
  private readonly reporter: MachineReporter
  private loop: Promise<void> | undefined
  private dirty = false
  private finished = false
  private logOpened = false
  private readonly log: Logger

  constructor(record: MachineRecord, private readonly ctx: RuntimeContext) {
    this.id = record.id
    this.record = record
    this.config = ctx.catalog.getApp(record.app)?.config
    this.log = ctx.log.child({ machine: record.id, app: record.app })
    this.machineLog = new MachineLog(machineDir(ctx.options.dataDir, record.id), ctx.options.logRotation, (err) => {
      this.log.warn({ err }, 'machine log write failed; lines dropped')
    })
    this.crashes = new CrashTracker(ctx.options.crashPolicy)
    this.reporter = new MachineReporter(record.id, record, ctx.catalog, this.log)
    // a failure survives a daemon restart: it is retried only when a new start is requested
    if (record.state === 'failed') this.failedFor = requestKey(record)
  }

  get app(): string { return this.record.app }
  get pid(): number | undefined { return this.instance?.proc.pid }
  get isAdopted(): boolean { return this.instance?.proc.adopted === true }

  /** Schedules a reconcile step; steps never overlap. */
  kick(): void {
    this.dirty = true
    this.loop ??= this.runLoop()
  }

  /** Resolves when no step is running or queued. */
  async idle(): Promise<void> {
    while (this.loop !== undefined) await this.loop
    await this.reporter.flushed()
  }

  /** Takes over a process a previous daemon left running (its pid file checked out). */
  async adopt(pidRecord: PidRecord, stat: ProcStat): Promise<void> {
    const addr = this.ctx.pool.acquire(this.id, pidRecord.privateAddr)
    await this.openLog()
    const previous = { checks: this.record.checks, ready: this.record.ready }
    this.instance = this.watch(MachineInstance.adopt(pidRecord, stat, previous, this.ctx.options.adoptedPollMs, this.instanceDeps(addr)))
    const phase = this.instance.phase
    this.log.info({ pid: pidRecord.pid, phase }, 'adopted machine process')
    const keepReason = this.record.state === 'started' || this.record.state === 'suspended'
    await this.report(phase === 'running' ? 'started' : 'suspended', keepReason ? this.record.stateReason : 'adopted after a daemon restart', addr)
  }

  /** The app was redeployed: a new command, env or checks apply from the Machine's next start. */
  configChanged(config: AppConfig): void {
    this.config = config
    this.kick() // new checks start with the next run; the running one keeps the checks it started with
  }

  private async runLoop(): Promise<void> {
    try {
      while (this.dirty) {
        this.dirty = false
        try {
          await this.step()
        } catch (err) {
          this.log.error({ err }, 'machine reconcile step failed')
        }
      }
    } finally {
      this.loop = undefined
    }
  }

  private async step(): Promise<void> {
    if (this.finished) return
    const current = this.ctx.catalog.getMachine(this.id)
    const gone = current === undefined || current.node !== this.ctx.catalog.nodeName
    if (current !== undefined) this.record = current
    this.config = this.ctx.catalog.getApp(this.record.app)?.config ?? this.config // the last config is kept after app removal: it says how to stop

    if (this.pendingExit !== undefined) await this.handleUnexpectedExit()

    if (this.ctx.shuttingDown) return this.shutdownStep()
    if (gone) return this.removedStep()
    switch (this.record.desired) {
      case 'destroyed': return this.destroyStep()
      case 'stopped': return this.stopStep(this.record.desiredReason || 'stop requested')
      case 'suspended': return this.suspendStep()
      case 'started': return this.startStep()
    }
  }

  // ---- started ----

  private async startStep(): Promise<void> {
    if (this.record.state === 'destroyed' || this.record.state === 'destroying') return // the API refuses this; never resurrect
    if (this.failedFor !== undefined) {
      if (this.failedFor === requestKey(this.record)) return
      this.failedFor = undefined
      this.crashes.reset()
    }
    if (this.instance !== undefined) {
      if (this.instance.phase === 'suspended') return this.resume(this.instance)
      if (this.instance.phase === 'starting') return this.maybeStarted(this.instance)
      return
    }
    if (this.restartTimer !== undefined) return // backing off after a crash
    const reason = this.restartReason ?? (this.record.desiredReason || 'start requested')
    this.restartReason = undefined
    await this.spawn(reason)
  }

  private async spawn(reason: string): Promise<void> {
    let addr: string
    let argv: string[]
    try {
      addr = this.ctx.pool.acquire(this.id, this.record.privateAddr)
      argv = resolveMachineCommand(this.record, this.config)
    } catch (err) {
      const e = EdgeProxyError.from(err)
      return this.fail(e.code === 'EP_MACHINE_ADDRESS_EXHAUSTED' ? e.code : 'EP_MACHINE_SPAWN_FAILED', e.message)
    }
    const env = buildMachineEnv({
      machine: this.record, config: this.config, privateAddr: addr, inherit: this.ctx.options.inheritEnv, flycastHosts: flycastHostsPath(this.ctx.options.dataDir),
    })
    this.startReason = reason
    // not awaited: the write queue keeps catalog writes in order, and the spawn need not wait for an fsync
    const reported = this.report('starting', reason, addr)
    try {
      await this.openLog()
      this.instance = this.watch(await MachineInstance.spawn(
        { argv, env, cwd: this.ctx.options.cwd, addr, killSignal: this.config?.kill_signal ?? 'SIGINT', killTimeoutMs: this.config?.kill_timeout ?? 5000 },
        this.instanceDeps(addr),
      ))
    } catch (err) {
      const e = EdgeProxyError.from(err)
      return this.fail('EP_MACHINE_SPAWN_FAILED', e.code === 'EP_MACHINE_SPAWN_FAILED' ? e.message : `cannot start: ${(err as Error).message}`)
    }
    clearTimeout(this.graceTimer)
    this.graceTimer = setTimeout(() => { this.graceTimer = undefined; this.kick() }, this.ctx.options.spawnGraceMs)
    await reported
  }

  private instanceDeps(addr: string): InstanceDeps {
    return {
      machineId: this.id,
      dataDir: this.ctx.options.dataDir,
      machineLog: this.machineLog,
      health: this.makeHealth(addr),
      log: this.log,
    }
  }

  private watch(instance: MachineInstance): MachineInstance {
    instance.onUnexpectedExit((exit) => {
      if (this.instance !== instance) return // a run that already ended
      this.pendingExit = { instance, exit }
      this.kick()
    })
    return instance
  }

  /** starting → started once the process survived the spawn grace, or became ready earlier. */
  private async maybeStarted(instance: MachineInstance): Promise<void> {
    const survived = Date.now() - instance.proc.startedAt >= this.ctx.options.spawnGraceMs
    if (!survived && !instance.health.isReady) return
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    instance.phase = 'running'
    if (instance.health.nothingToProbe) instance.health.markReady()
    await this.report('started', this.startReason)
  }

  private async resume(instance: MachineInstance): Promise<void> {
    const reason = this.record.desiredReason || 'resume requested'
    if (!(await instance.resume(reason))) return // it exited meanwhile; the next step handles that
    this.startReason = reason
    await this.report('started', reason)
  }

  // ---- stopped / suspended ----

  private async stopStep(reason: string): Promise<void> {
    this.cancelRestart()
    this.crashes.reset()
    if (this.instance !== undefined) {
      await this.report('stopping', reason)
      await this.terminate()
      await this.report('stopped', reason)
      return
    }
    // not running: a failed or crashed Machine asked to stop is simply stopped (a new start retries it)
    this.failedFor = undefined
    if (this.reporter.observed.state !== 'stopped') await this.report('stopped', reason)
  }

  private async suspendStep(): Promise<void> {
    this.cancelRestart()
    const reason = this.record.desiredReason || 'suspend requested'
    const instance = this.instance
    if (instance === undefined) {
      const { state } = this.reporter.observed
      if (state !== 'stopped' && state !== 'failed') await this.report('stopped', `not running, nothing to suspend: ${reason}`)
      return
    }
    if (instance.phase === 'suspended') return
    await this.report('suspending', reason)
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    if (!(await instance.suspend(reason))) return // it exited meanwhile; the next step reports it
    await this.report('suspended', reason)
  }

  // ---- destroyed / removed / shutdown ----

  private async destroyStep(): Promise<void> {
    if (this.record.state === 'destroyed') return this.scheduleRemoval()
    const reason = this.record.desiredReason || 'destroy requested'
    this.cancelRestart()
    await this.report('destroying', reason)
    if (this.instance !== undefined) await this.terminate()
    await this.discardFiles()
    await this.report('destroyed', reason)
    this.log.info({ reason }, 'machine destroyed')
    this.scheduleRemoval()
  }

  private scheduleRemoval(): void {
    if (this.removalTimer !== undefined) return
    const due = this.record.stateAt + this.ctx.options.destroyedRetentionMs
    this.removalTimer = setTimeout(() => {
      void this.reporter.enqueue(async () => {
        if (this.ctx.catalog.getMachine(this.id) !== undefined) await this.ctx.catalog.removeMachine(this.id)
      }, 'remove destroyed machine')
    }, Math.max(0, due - Date.now()))
    this.removalTimer.unref()
  }

  private async removedStep(): Promise<void> {
    this.cancelRestart()
    if (this.instance !== undefined) await this.terminate()
    await this.discardFiles()
    this.finish()
    this.ctx.forget(this.id)
  }

  private async shutdownStep(): Promise<void> {
    this.cancelRestart()
    if (this.instance !== undefined) {
      await this.report('stopping', 'node shutting down')
      await this.terminate()
      await this.report('stopped', 'node shutting down')
    }
    this.finish()
    await this.machineLog.close()
  }

  private finish(): void {
    this.finished = true
    this.instance?.health.stop()
    clearTimeout(this.graceTimer)
    clearTimeout(this.removalTimer)
    this.cancelRestart()
  }

  private async discardFiles(): Promise<void> {
    await this.machineLog.close()
    this.logOpened = false
    await rm(machineDir(this.ctx.options.dataDir, this.id), { recursive: true, force: true })
    this.ctx.pool.release(this.id)
  }

  // ---- process exits ----

  /** Stops the process per kill_signal / kill_timeout and waits for it (and its group) to be gone. */
  private async terminate(): Promise<void> {
    const instance = this.instance as MachineInstance
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    // a stop request may name its own signal and grace period (Fly's stop body); else fly.toml's
    const asked = this.record.desired === 'stopped' || this.record.desired === 'destroyed' ? this.record : undefined
    await instance.terminate(asked?.stopSignal ?? this.config?.kill_signal ?? 'SIGINT', asked?.stopTimeout ?? this.config?.kill_timeout ?? 5000)
    this.instance = undefined
    this.pendingExit = undefined
  }

  private async handleUnexpectedExit(): Promise<void> {
    const { instance, exit } = this.pendingExit as { instance: MachineInstance; exit: ExitInfo }
    this.pendingExit = undefined
    const wasStarting = instance.phase === 'starting'
    this.instance = undefined
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    const { how, lastOutput } = await instance.cleanUpAfterExit(exit)
    if (this.record.desired !== 'started' || this.ctx.shuttingDown) {
      await this.report('stopped', how)
      return
    }
    if (wasStarting && this.crashes.count === 0) {
      const after = seconds(exit.at - instance.proc.startedAt)
      return this.fail('EP_MACHINE_SPAWN_FAILED', `\`${instance.argv.join(' ')}\` ${how} ${after} after starting${lastOutput}; see \`edgeproxy machines logs ${this.id}\``)
    }
    const verdict = this.crashes.record(Date.now())
    const policy = this.ctx.options.crashPolicy
    if (verdict.action === 'give-up') {
      return this.fail('EP_MACHINE_CRASH_LOOP', `crashed ${verdict.crashesInWindow} times within ${seconds(policy.windowMs)} (last: ${how})${lastOutput}; fix the app, then run \`edgeproxy machines start ${this.id}\``)
    }
    await this.report('stopped', `crashed (${how}); restarting in ${seconds(verdict.delayMs)} (crash ${verdict.crashesInWindow} of ${policy.maxCrashes} allowed within ${seconds(policy.windowMs)})`)
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined
      this.restartReason = `restarted after a crash (${how})`
      this.kick()
    }, verdict.delayMs)
  }

  private async fail(code: ErrorCode, message: string): Promise<void> {
    this.failedFor = requestKey(this.record)
    this.machineLog.note(`failed: ${code}: ${message}`)
    this.log.warn({ code, reason: message }, 'machine failed')
    await this.report('failed', `${code}: ${message}`)
  }

  private cancelRestart(): void {
    clearTimeout(this.restartTimer)
    this.restartTimer = undefined
    this.restartReason = undefined
  }

  // ---- health and reports ----

  private makeHealth(addr: string): MachineHealth {
    const plan = planMachineChecks(this.config, this.record.spec.processGroup, addr, { forwardedProto: this.ctx.options.forwardedProto })
    return new MachineHealth(plan, addr, this.ctx.probe, this.ctx.options.health, (state, changes) => this.onHealth(state, changes))
  }

  private onHealth(state: HealthState, changes: CheckChange[]): void {
    for (const c of changes) {
      this.machineLog.note(`health check ${c.name} is ${c.status} (${c.detail})`)
      this.log.info({ check: c.name, status: c.status, previous: c.previous, detail: c.detail }, 'health check changed')
    }
    this.reporter.reportHealth(state)
    if (state.ready && this.instance?.phase === 'starting') this.kick()
  }

  private report(state: MachineState, reason: string, privateAddr?: string): Promise<void> {
    return this.reporter.observe(state, reason, privateAddr)
  }

  private async openLog(): Promise<void> {
    if (this.logOpened) return
    await this.machineLog.open()
    this.logOpened = true
  }
}
