import type { Logger } from 'pino'
import type { CatalogReader, CatalogWriter } from '../catalog/catalog-api.js'
import { DEFAULT_MACHINE_RANGE } from './address-pool.js'
import { type CrashPolicy, DEFAULT_CRASH_POLICY } from './backoff.js'
import { DEFAULT_HEALTH_OPTIONS, type HealthOptions } from './health/machine-health.js'
import type { Probe } from './health/probe.js'
import { DEFAULT_LOG_ROTATION, type LogRotation } from './logs/rotating-log.js'
import { DEFAULT_INHERITED_ENV } from './machine-env.js'

export interface MachineSupervisorInit {
  /** The node's data directory; Machines live in `<dataDir>/machines/<id>/` (pid file, FIFO, logs/). */
  dataDir: string
  /** Loopback range Machine addresses come from (default 127.66.0.0/16). */
  machineRange?: string
  /** Working directory of Machine processes (default: the daemon's). */
  cwd?: string
  /** Host environment variables passed to Machines (default PATH, HOME, LANG, LC_ALL, TZ, TMPDIR). */
  inheritEnv?: readonly string[]
  logRotation?: Partial<LogRotation>
  crashPolicy?: Partial<CrashPolicy>
  health?: Partial<HealthOptions> & {
    /** X-Forwarded-Proto sent with HTTP checks unless they set one (default "https"; false: none). */
    forwardedProto?: string | false
  }
  /**
   * A process that exits within this long of its first start, before it became ready, "exits at once":
   * the Machine fails with EP_MACHINE_SPAWN_FAILED instead of entering the crash loop (default 1000 ms).
   * It is also when a Machine with nothing to probe counts as started.
   */
  spawnGraceMs?: number
  /** A destroyed Machine stays listed (state destroyed) this long before its record is removed (default 5 min). */
  destroyedRetentionMs?: number
  /** How often a process adopted from a previous daemon is checked for exit (default 1000 ms). */
  adoptedPollMs?: number
}

/** The catalog slices the supervisor uses: it reads everything, writes only its Machines' observed side. */
export type SupervisorCatalog = Pick<CatalogReader, 'nodeName' | 'getMachine' | 'getApp' | 'snapshot' | 'subscribe'>
  & Pick<CatalogWriter, 'reportObserved' | 'reportHealth' | 'removeMachine'>

export interface MachineSupervisorComponents {
  catalog: SupervisorCatalog
  log: Logger
  /** Health probe (default: real TCP/HTTP probes against the Machine's private address). */
  probe?: Probe
}

export interface ResolvedSupervisorOptions {
  dataDir: string
  machineRange: string
  cwd: string
  inheritEnv: readonly string[]
  logRotation: LogRotation
  crashPolicy: CrashPolicy
  health: HealthOptions
  forwardedProto: string | false
  spawnGraceMs: number
  destroyedRetentionMs: number
  adoptedPollMs: number
}

export function resolveSupervisorOptions(init: MachineSupervisorInit): ResolvedSupervisorOptions {
  const { forwardedProto, ...health } = init.health ?? {}
  return {
    dataDir: init.dataDir,
    machineRange: init.machineRange ?? DEFAULT_MACHINE_RANGE,
    cwd: init.cwd ?? process.cwd(),
    inheritEnv: init.inheritEnv ?? DEFAULT_INHERITED_ENV,
    logRotation: { ...DEFAULT_LOG_ROTATION, ...init.logRotation },
    crashPolicy: { ...DEFAULT_CRASH_POLICY, ...init.crashPolicy },
    health: { ...DEFAULT_HEALTH_OPTIONS, ...health },
    forwardedProto: forwardedProto ?? 'https',
    spawnGraceMs: init.spawnGraceMs ?? 1000,
    destroyedRetentionMs: init.destroyedRetentionMs ?? 5 * 60_000,
    adoptedPollMs: init.adoptedPollMs ?? 1000,
  }
}
