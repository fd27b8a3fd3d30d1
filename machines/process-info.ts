import { readdirSync, readFileSync } from 'node:fs'

/**
 * What /proc tells about a process (Linux). The start time (clock ticks since boot, field 22 of
 * /proc/PID/stat) together with the boot id identifies a process for good: a recycled pid has another start
 * time, so a pid file can be checked before we signal anything.
 */
export interface ProcStat {
  pid: number
  /** R running, S sleeping, D disk, T stopped (SIGSTOP), t traced, Z zombie, X dead. */
  state: string
  ppid: number
  pgid: number
  startTime: number
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1')
  } catch {
    return undefined // ENOENT: the process is gone, which is the answer
  }
  // comm (field 2) may hold spaces and parentheses: the fields we need follow the last ')'
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { pid, state: rest[0], ppid: Number(rest[1]), pgid: Number(rest[2]), startTime: Number(rest[19]) }
}

let bootIdCache: string | undefined
export function bootId(): string {
  bootIdCache ??= readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()
  return bootIdCache
}

/** Alive and not a zombie: a zombie has exited and only waits for its parent to reap it. */
export function isRunning(stat: ProcStat | undefined): stat is ProcStat {
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X'
}

export function isStopped(stat: ProcStat | undefined): boolean {
  return stat !== undefined && (stat.state === 'T' || stat.state === 't')
}

/** Pids of every live process in a process group (a Machine's process and its descendants). */
export function processGroupMembers(pgid: number): number[] {
  const pids: number[] = []
  let entries: string[]
  try {
    entries = readdirNumeric('/proc')
  } catch {
    return pids
  }
  for (const name of entries) {
    const stat = readProcStat(Number(name))
    if (stat !== undefined && stat.pgid === pgid && isRunning(stat)) pids.push(stat.pid)
  }
  return pids
}

function readdirNumeric(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.charCodeAt(0) >= 48 && n.charCodeAt(0) <= 57)
}
