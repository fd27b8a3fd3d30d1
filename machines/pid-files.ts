import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { SignalSchema } from '../schemas/app-config.js'
import { MACHINE_ID } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { bootId, isRunning, readProcStat, type ProcStat } from './process-info.js'

/**
 * `<dataDir>/machines/<id>/machine.json`: written when a Machine's process starts, removed when it has
 * exited. After a daemon crash it lets the next daemon find its Machines again (issue 5, "no orphans"), and
 * it records how to stop a process whose Machine the catalog no longer knows.
 */
export const PidRecordSchema = z.strictObject({
  machineId: z.string().regex(MACHINE_ID),
  pid: z.number().int().positive(),
  /** /proc start time in clock ticks since boot; with bootId it tells our process from a recycled pid. */
  startTime: z.number().int().nonnegative(),
  bootId: z.string(),
  argv: z.array(z.string()),
  privateAddr: z.string(),
  killSignal: SignalSchema,
  killTimeoutMs: z.number().int().nonnegative(),
  spawnedAt: z.number(),
})
export type PidRecord = z.infer<typeof PidRecordSchema>

const PID_FILE = 'machine.json'

export function machinesRoot(dataDir: string): string {
  return join(dataDir, 'machines')
}

/** The Machine's folder; the id is checked because it comes from the catalog or an API path. */
export function machineDir(dataDir: string, machineId: string): string {
  if (!MACHINE_ID.test(machineId)) throw new EdgeProxyError('EP_INVALID_REQUEST', `"${machineId}" is not a Machine id (14 lowercase hex digits)`, { path: 'id' })
  return join(machinesRoot(dataDir), machineId)
}

export async function writePidRecord(dataDir: string, record: PidRecord): Promise<void> {
  const dir = machineDir(dataDir, record.machineId)
  await mkdir(dir, { recursive: true })
  const tmp = join(dir, `${PID_FILE}.tmp`)
  await writeFile(tmp, JSON.stringify(record))
  await rename(tmp, join(dir, PID_FILE)) // atomic: a crash never leaves half a pid file
}

export async function removePidRecord(dataDir: string, machineId: string): Promise<void> {
  await rm(join(machineDir(dataDir, machineId), PID_FILE), { force: true })
}

export interface FoundPidRecord {
  machineId: string
  record?: PidRecord
  /** Why the file could not be used (unreadable, invalid). */
  problem?: string
}

/** Every pid file under the data dir, parsed; a damaged one is reported, never trusted. */
export async function listPidRecords(dataDir: string): Promise<FoundPidRecord[]> {
  let ids: string[]
  try {
    ids = (await readdir(machinesRoot(dataDir))).filter((n) => MACHINE_ID.test(n))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const found: FoundPidRecord[] = []
  for (const machineId of ids) {
    let text: string
    try {
      text = await readFile(join(machinesRoot(dataDir), machineId, PID_FILE), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue // not running: nothing to adopt
      found.push({ machineId, problem: `unreadable pid file: ${(err as Error).message}` })
      continue
    }
    try {
      const parsed = PidRecordSchema.safeParse(JSON.parse(text))
      if (parsed.success && parsed.data.machineId === machineId) found.push({ machineId, record: parsed.data })
      else found.push({ machineId, problem: parsed.success ? 'pid file names another Machine' : `invalid pid file: ${parsed.error.issues[0]?.message}` })
    } catch (err) {
      found.push({ machineId, problem: `invalid pid file: ${(err as Error).message}` })
    }
  }
  return found
}

/** The live process a pid file describes, or undefined when it exited (or its pid now belongs to another). */
export function liveProcessOf(record: PidRecord): ProcStat | undefined {
  if (record.bootId !== bootId()) return undefined
  const stat = readProcStat(record.pid)
  if (!isRunning(stat) || stat.startTime !== record.startTime) return undefined
  return stat
}
