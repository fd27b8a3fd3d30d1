import { spawn } from 'node:child_process'
import { stat } from 'node:fs/promises'
import { EdgeProxyError } from '../schemas/errors.js'
import { isRunning, isStopped, processGroupMembers, readProcStat } from './process-info.js'

export interface ExitInfo {
  /** null when killed by a signal, or unknown (an adopted process is not our child: no exit status). */
  code: number | null
  signal: NodeJS.Signals | null
  at: number
}

/**
 * A Machine's running process. It leads its own process group (spawned detached), so signals go to the
 * group and reach every descendant: a shell wrapper's children die with it.
 */
export interface MachineProcess {
  readonly pid: number
  /** Found alive by a new daemon from its pid file, rather than spawned by this one. */
  readonly adopted: boolean
  readonly startedAt: number
  readonly exited: Promise<ExitInfo>
  readonly exitInfo: ExitInfo | undefined
  /** Signals the whole group; false when nothing is left to signal. */
  signalGroup(signal: NodeJS.Signals): boolean
  /** Stopped by SIGSTOP (suspended). */
  isSuspended(): boolean
  dispose(): void
}

export interface SpawnSpec {
  argv: string[]
  env: Record<string, string>
  cwd: string
  /** stdout and stderr of the Machine (its log FIFO). */
  stdioFd: number
}

function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    throw err
  }
}

function spawnFailure(argv: string[], env: Record<string, string>, err: NodeJS.ErrnoException): EdgeProxyError {
  const cmd = argv[0]
  const why = err.code === 'ENOENT'
    ? `command not found: "${cmd}"${cmd.includes('/') ? '' : ` (searched PATH=${shorten(env.PATH ?? '(unset)', 200)})`}`
    : err.code === 'EACCES'
      ? `permission denied running "${cmd}" (is it executable?)`
      : `cannot run "${cmd}": ${err.message}`
  return new EdgeProxyError('EP_MACHINE_SPAWN_FAILED', why, { cause: err })
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`
}

/** Starts a Machine's process; resolves once it runs, rejects with EP_MACHINE_SPAWN_FAILED when it cannot. */
export async function spawnMachineProcess(spec: SpawnSpec): Promise<MachineProcess> {
  if (spec.argv.length === 0) throw new EdgeProxyError('EP_MACHINE_SPAWN_FAILED', 'empty command')
  // spawn reports a missing cwd as ENOENT too, which would read as "command not found"
  const cwdOk = await stat(spec.cwd).then((s) => s.isDirectory(), () => false)
  if (!cwdOk) throw new EdgeProxyError('EP_MACHINE_SPAWN_FAILED', `working directory "${spec.cwd}" does not exist`)

  const child = spawn(spec.argv[0], spec.argv.slice(1), {
    cwd: spec.cwd,
    env: spec.env,
    detached: true, // own process group: we signal -pid, and the daemon's Ctrl-C does not reach Machines
    stdio: ['ignore', spec.stdioFd, spec.stdioFd],
  })
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', (err) => reject(spawnFailure(spec.argv, spec.env, err)))
  })
  // after spawn, 'error' only reports a failed child.kill(), which we never call (we signal the group)
  child.on('error', () => {})
  const pid = child.pid as number
  let exitInfo: ExitInfo | undefined
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal, at: Date.now() }
      resolve(exitInfo)
    })
  })
  return {
    pid,
    adopted: false,
    startedAt: Date.now(),
    exited,
    get exitInfo() { return exitInfo },
    signalGroup: (signal) => signalGroup(pid, signal),
    isSuspended: () => isStopped(readProcStat(pid)),
    dispose: () => {},
  }
}

/**
 * Takes over a Machine process left running by a previous daemon. It is not our child, so its exit is
 * noticed by polling /proc (pid + start time, so a recycled pid is never mistaken for it).
 */
export function adoptMachineProcess(pid: number, startTime: number, startedAt: number, pollMs = 1000): MachineProcess {
  let exitInfo: ExitInfo | undefined
  let timer: NodeJS.Timeout | undefined
  let resolveExit!: (info: ExitInfo) => void
  const exited = new Promise<ExitInfo>((resolve) => { resolveExit = resolve })
  const check = (): boolean => {
    const st = readProcStat(pid)
    if (isRunning(st) && st.startTime === startTime) return true
    exitInfo = { code: null, signal: null, at: Date.now() }
    clearInterval(timer)
    resolveExit(exitInfo)
    return false
  }
  if (check()) {
    timer = setInterval(check, pollMs)
    timer.unref()
  }
  return {
    pid,
    adopted: true,
    startedAt,
    exited,
    get exitInfo() { return exitInfo },
    signalGroup: (signal) => {
      // only while it is still the process we adopted: never signal a recycled pid's group
      if (exitInfo !== undefined || !check()) return false
      return signalGroup(pid, signal)
    },
    isSuspended: () => isStopped(readProcStat(pid)),
    dispose: () => clearInterval(timer),
  }
}

/** Polls until the check holds or the time is up; suspend and resume take effect within microseconds. */
async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  let delay = 1
  while (!check()) {
    if (Date.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 20)
  }
  return true
}

/** SIGSTOP to the group (our suspend: memory is kept, resume takes milliseconds). */
export async function suspendProcess(proc: MachineProcess, timeoutMs = 2000): Promise<boolean> {
  if (!proc.signalGroup('SIGSTOP')) return false
  return waitUntil(() => proc.exitInfo !== undefined || proc.isSuspended(), timeoutMs)
}

export async function resumeProcess(proc: MachineProcess, timeoutMs = 2000): Promise<boolean> {
  if (!proc.signalGroup('SIGCONT')) return false
  return waitUntil(() => proc.exitInfo !== undefined || !proc.isSuspended(), timeoutMs)
}

export interface TerminateOptions {
  signal: NodeJS.Signals
  timeoutMs: number
  /** Called when kill_timeout ran out and SIGKILL is sent. */
  onEscalate?: () => void
}

/** How long to wait for a SIGKILLed process to be gone before reporting that it would not die. */
const SIGKILL_GRACE_MS = 10_000

/**
 * Stops a Machine: kill_signal to the group, SIGKILL after kill_timeout, and SIGKILL to any descendant left
 * once the main process is gone (a Machine stops as a whole, like a VM).
 */
export async function terminateProcess(proc: MachineProcess, options: TerminateOptions): Promise<{ forced: boolean; exit: ExitInfo }> {
  let forced = false
  if (proc.exitInfo === undefined) {
    proc.signalGroup(options.signal)
    // a suspended process handles the signal only once it runs again; SIGKILL works on it anyway
    if (options.signal !== 'SIGSTOP' && options.signal !== 'SIGKILL') proc.signalGroup('SIGCONT')
    let timer: NodeJS.Timeout | undefined
    const timedOut = await Promise.race([
      proc.exited.then(() => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), options.timeoutMs) }),
    ])
    clearTimeout(timer)
    if (timedOut) {
      forced = true
      options.onEscalate?.()
      proc.signalGroup('SIGKILL')
      const gone = await Promise.race([
        proc.exited.then(() => true),
        new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), SIGKILL_GRACE_MS) }),
      ])
      clearTimeout(timer)
      if (!gone) throw new EdgeProxyError('EP_INTERNAL', `process ${proc.pid} survived SIGKILL for ${SIGKILL_GRACE_MS / 1000}s (stuck in the kernel?)`)
    }
  }
  await killLeftovers(proc)
  proc.dispose()
  return { forced, exit: proc.exitInfo as ExitInfo }
}

/**
 * SIGKILLs whatever is left of the group once its leader exited, and resolves once all of it is gone: a
 * crashed or stopped app's children must not hold its port when the Machine is reported stopped or restarts
 * (a SIGKILLed process lingers for a few milliseconds before it is gone).
 */
export async function killLeftovers(proc: MachineProcess): Promise<void> {
  try {
    process.kill(-proc.pid, 'SIGKILL')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
    return // nothing left in the group
  }
  if (!(await waitUntil(() => processGroupMembers(proc.pid).length === 0, SIGKILL_GRACE_MS))) {
    throw new EdgeProxyError('EP_INTERNAL', `process group ${proc.pid} survived SIGKILL for ${SIGKILL_GRACE_MS / 1000}s (stuck in the kernel?)`)
  }
}
