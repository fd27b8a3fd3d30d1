import { closeSync } from 'node:fs'
import type { Logger } from 'pino'
import type { KillSignal } from '../schemas/app-config.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { describeExit, lastOutputNote, seconds } from './exit-reasons.js'
import type { MachineHealth } from './health/machine-health.js'
import type { MachineLog } from './logs/machine-log.js'
import { type PidRecord, removePidRecord, writePidRecord } from './pid-files.js'
import { bootId, isStopped, type ProcStat, readProcStat } from './process-info.js'
import {
  adoptMachineProcess, type ExitInfo, killLeftovers, type MachineProcess, resumeProcess, spawnMachineProcess, suspendProcess,
  terminateProcess,
} from './process-runner.js'

export type InstancePhase = 'starting' | 'running' | 'suspended'

/** Bounded wait for a Machine's last output after it exited (the FIFO's writers close with it). */
const LOG_DRAIN_MS = 500

export interface InstanceDeps {
  machineId: string
  dataDir: string
  machineLog: MachineLog
  health: MachineHealth
  log: Logger
}

export interface SpawnInstance {
  argv: string[]
  env: Record<string, string>
  cwd: string
  addr: string
  killSignal: KillSignal
  killTimeoutMs: number
}

/**
 * One run of a Machine: its process group, the log pipe it writes to, its pid file and its checks, from
 * spawn (or adoption) to exit. It carries out what the runtime decides and decides nothing itself.
 */
export class MachineInstance {
  phase: InstancePhase
  private expectingExit = false

  private constructor(readonly proc: MachineProcess, readonly argv: string[], phase: InstancePhase, private readonly deps: InstanceDeps) {
    this.phase = phase
  }

  /** Called once if the process exits without terminate() having been asked for (also if it already has). */
  onUnexpectedExit(listener: (exit: ExitInfo) => void): void {
    void this.proc.exited.then((exit) => { if (!this.expectingExit) listener(exit) })
  }

  get health(): MachineHealth { return this.deps.health }

  /** Rejects with EP_MACHINE_SPAWN_FAILED when the process cannot run (missing command, log pipe). */
  static async spawn(spec: SpawnInstance, deps: InstanceDeps): Promise<MachineInstance> {
    const { machineLog } = deps
    let fd: number
    try {
      fd = machineLog.machineFd()
      machineLog.attach()
    } catch (err) {
      throw new EdgeProxyError('EP_MACHINE_SPAWN_FAILED', `cannot set up the Machine's log pipe: ${(err as Error).message}`, { cause: err })
    }
    let proc: MachineProcess
    try {
      proc = await spawnMachineProcess({ argv: spec.argv, env: spec.env, cwd: spec.cwd, stdioFd: fd })
    } catch (err) {
      machineLog.detach()
      if (EdgeProxyError.is(err, 'EP_MACHINE_SPAWN_FAILED')) throw err
      throw new EdgeProxyError('EP_MACHINE_SPAWN_FAILED', `cannot start: ${(err as Error).message}`, { cause: err })
    } finally {
      closeSync(fd) // the child holds its own copy
    }
    machineLog.note(`starting ${spec.argv.join(' ')} (pid ${proc.pid}) as ${spec.addr}, PORT=${spec.env.PORT}`)
    deps.log.info({ pid: proc.pid, addr: spec.addr, argv: spec.argv }, 'machine process spawned')
    await writePidRecord(deps.dataDir, {
      machineId: deps.machineId, pid: proc.pid, startTime: readProcStat(proc.pid)?.startTime ?? 0, bootId: bootId(), argv: spec.argv,
      privateAddr: spec.addr, killSignal: spec.killSignal, killTimeoutMs: spec.killTimeoutMs, spawnedAt: proc.startedAt,
    })
    deps.health.start({ mode: 'fresh' })
    return new MachineInstance(proc, spec.argv, 'starting', deps)
  }

  /** Takes over a process a previous daemon left running; its checks continue from what the catalog says. */
  static adopt(pid: PidRecord, stat: ProcStat, previous: { checks: Record<string, 'passing' | 'warning' | 'critical'>; ready: boolean }, pollMs: number, deps: InstanceDeps): MachineInstance {
    const proc = adoptMachineProcess(pid.pid, pid.startTime, pid.spawnedAt, pollMs)
    const phase: InstancePhase = isStopped(stat) ? 'suspended' : 'running'
    deps.machineLog.attach()
    deps.machineLog.note(`adopted pid ${pid.pid} after a daemon restart (${phase})`)
    if (phase === 'running') deps.health.start({ mode: 'adopt', previous })
    return new MachineInstance(proc, pid.argv, phase, deps)
  }

  /** False when the process exited meanwhile (that is reported as an unexpected exit). */
  async suspend(reason: string): Promise<boolean> {
    this.deps.health.pause()
    const ok = await suspendProcess(this.proc)
    if (this.proc.exitInfo !== undefined) return false
    if (!ok) this.deps.log.warn({ pid: this.proc.pid }, 'process not stopped 2 s after SIGSTOP')
    this.phase = 'suspended'
    this.deps.machineLog.note(`suspended (SIGSTOP): ${reason}`)
    return true
  }

  /** False when the process exited meanwhile. */
  async resume(reason: string): Promise<boolean> {
    await resumeProcess(this.proc)
    if (this.proc.exitInfo !== undefined) return false
    this.phase = 'running'
    this.deps.machineLog.note(`resumed (SIGCONT): ${reason}`)
    this.deps.health.start({ mode: 'resume' })
    if (this.deps.health.nothingToProbe) this.deps.health.markReady()
    return true
  }

  /** kill_signal, SIGKILL after kill_timeout; resolves once the whole group is gone. */
  async terminate(signal: KillSignal, timeoutMs: number): Promise<void> {
    this.expectingExit = true
    this.deps.health.pause()
    const { machineLog } = this.deps
    machineLog.note(`sending ${signal} (kill_timeout ${seconds(timeoutMs)})`)
    const { forced, exit } = await terminateProcess(this.proc, {
      signal,
      timeoutMs,
      onEscalate: () => machineLog.note(`still running after ${seconds(timeoutMs)}; sending SIGKILL`),
    })
    await machineLog.drain(LOG_DRAIN_MS)
    machineLog.note(`${describeExit(exit)}${forced ? ' (forced)' : ''}`)
    machineLog.detach()
    this.deps.log.info({ pid: this.proc.pid, forced, code: exit.code, signal: exit.signal }, 'machine process stopped')
    await removePidRecord(this.deps.dataDir, this.deps.machineId)
  }

  /** After an unexpected exit: clears what is left and says how it ended, with its last output. */
  async cleanUpAfterExit(exit: ExitInfo): Promise<{ how: string; lastOutput: string }> {
    await killLeftovers(this.proc) // a crashed app's children must not keep its port
    this.proc.dispose()
    this.deps.health.pause()
    const { machineLog } = this.deps
    await machineLog.drain(LOG_DRAIN_MS)
    const how = describeExit(exit)
    const lastOutput = lastOutputNote(machineLog.recentOutput())
    machineLog.note(how)
    machineLog.detach()
    await removePidRecord(this.deps.dataDir, this.deps.machineId)
    this.deps.log.warn({ pid: this.proc.pid, code: exit.code, signal: exit.signal }, 'machine process exited unexpectedly')
    return { how, lastOutput }
  }
}
