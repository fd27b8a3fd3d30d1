import type { CheckStatus } from '../../schemas/catalog-records.js'
import type { HealthPlan, PlannedCheck } from './check-plan.js'
import type { Probe } from './probe.js'

export interface HealthOptions {
  /** Consecutive failures that turn a passing check critical (1 fails it at once; FLY-SPEC §8). */
  failureThreshold: number
  /** Consecutive passes that turn a check passing. */
  successThreshold: number
  /**
   * Until a readiness check has passed since the last start, it is retried at most this long apart instead
   * of every `interval` (starting at 5 ms and doubling), so a cold start becomes routable within
   * milliseconds of the app being ready, not up to an interval later.
   */
  readinessPollMs: number
}

export const DEFAULT_HEALTH_OPTIONS: HealthOptions = { failureThreshold: 1, successThreshold: 1, readinessPollMs: 5 }

export interface HealthState {
  checks: Record<string, CheckStatus>
  ready: boolean
}

export interface CheckChange {
  name: string
  status: CheckStatus
  previous: CheckStatus
  detail: string
}

export type HealthListener = (state: HealthState, changes: CheckChange[]) => void

/** How the checks begin: after a (re)start, after a resume (no grace period), or continuing an adopted Machine. */
export type HealthStart = { mode: 'fresh' } | { mode: 'resume' } | { mode: 'adopt'; previous: HealthState }

interface CheckRun {
  readonly check: PlannedCheck
  status: CheckStatus
  passes: number
  failures: number
  passedSinceStart: boolean
  timer: NodeJS.Timeout | undefined
  /** The last failure's detail: a new one (ECONNREFUSED → HTTP 301) is worth a log line though the status stays. */
  lastDetail: string | undefined
}

/** The probe used for ports without checks: short, since it is retried at readinessPollMs. */
const PORT_PROBE_TIMEOUT_MS = 1000
const FIRST_READINESS_RETRY_MS = 5

/**
 * Runs one Machine's checks and decides readiness (issue 5 §4–5): ready only after every readiness check
 * passed once since the last start — with no check, once every service port accepted. Ready then stays
 * true until pause() (stop, suspend, crash); a check failing later turns critical, which routing sees, but
 * the Machine is not restarted (FLY-SPEC §8).
 */
export class MachineHealth {
  private readonly runs: CheckRun[]
  private ready = false
  private pendingPorts = new Set<number>()
  private portTimers = new Map<number, NodeJS.Timeout>()
  private portAttempts = new Map<number, number>()
  /** Bumped by every start/pause: results of probes begun before are dropped. */
  private generation = 0
  private active = false

  constructor(
    private readonly plan: HealthPlan,
    private readonly host: string,
    private readonly probe: Probe,
    private readonly options: HealthOptions,
    private readonly listener: HealthListener,
  ) {
    this.runs = plan.checks.map((check) => ({ check, status: 'warning', passes: 0, failures: 0, passedSinceStart: false, timer: undefined, lastDetail: undefined }))
  }

  /** Nothing tells readiness (no service): the supervisor marks it ready once the process is started. */
  get nothingToProbe(): boolean {
    return this.plan.readinessPorts.length === 0 && !this.plan.checks.some((c) => c.readiness)
  }

  get state(): HealthState {
    return { checks: Object.fromEntries(this.runs.map((r) => [r.check.name, r.status])), ready: this.ready }
  }

  get isReady(): boolean { return this.ready }

  start(how: HealthStart): void {
    this.clearTimers()
    this.generation++
    this.active = true
    const before = this.state
    for (const run of this.runs) {
      run.passes = 0
      run.failures = 0
      run.lastDetail = undefined
      if (how.mode === 'adopt') {
        run.status = how.previous.checks[run.check.name] ?? 'warning'
        run.passedSinceStart = how.previous.ready
      } else {
        if (how.mode === 'fresh') run.status = 'warning' // not known yet: "warning" until the first result
        run.passedSinceStart = false
      }
    }
    this.ready = how.mode === 'adopt' ? how.previous.ready : false
    this.pendingPorts = new Set(this.ready ? [] : this.plan.readinessPorts)
    this.portAttempts.clear()
    this.emitIfChanged(before, [])
    const gen = this.generation
    for (const run of this.runs) this.schedule(run, gen, how.mode === 'fresh' ? run.check.graceMs : 0)
    for (const port of this.pendingPorts) this.schedulePort(port, gen, 0)
  }

  /** For a Machine with nothing to probe, once its process is started. */
  markReady(): void {
    if (!this.active || this.ready) return
    const before = this.state
    this.ready = true
    this.emitIfChanged(before, [])
  }

  /** Stop, suspend or crash: checks stop and the Machine is not ready. */
  pause(): void {
    this.stop()
    if (this.ready) {
      const before = this.state
      this.ready = false
      this.emitIfChanged(before, [])
    }
  }

  /** Stops the timers without reporting anything (supervisor shutdown reports on its own). */
  stop(): void {
    this.active = false
    this.generation++
    this.clearTimers()
  }

  private clearTimers(): void {
    for (const run of this.runs) clearTimeout(run.timer)
    for (const t of this.portTimers.values()) clearTimeout(t)
    this.portTimers.clear()
  }

  private schedule(run: CheckRun, gen: number, delayMs: number): void {
    run.timer = setTimeout(() => { void this.runCheck(run, gen) }, delayMs)
  }

  private async runCheck(run: CheckRun, gen: number): Promise<void> {
    const began = Date.now()
    const result = await this.probe(run.check.target).catch((err: Error) => ({ ok: false, detail: err.message }))
    if (gen !== this.generation) return
    const before = this.state
    const previous = run.status
    if (result.ok) {
      run.passes++
      run.failures = 0
      if (run.passes >= this.options.successThreshold) {
        run.status = 'passing'
        run.passedSinceStart = true
      }
    } else {
      run.failures++
      run.passes = 0
      if (run.status !== 'critical') run.status = run.failures >= this.options.failureThreshold ? 'critical' : 'warning'
    }
    this.updateReady()
    const newDetail = result.detail !== run.lastDetail
    run.lastDetail = result.detail
    const changes = run.status !== previous || (!result.ok && newDetail) ? [{ name: run.check.name, status: run.status, previous, detail: result.detail }] : []
    this.emitIfChanged(before, changes)
    // start to start, so a status flips within interval + timeout of the app changing
    const period = run.check.readiness && !run.passedSinceStart
      ? Math.min(this.readinessDelay(run.failures + run.passes), run.check.intervalMs)
      : run.check.intervalMs
    this.schedule(run, gen, Math.max(0, period - (Date.now() - began)))
  }

  private schedulePort(port: number, gen: number, delayMs: number): void {
    this.portTimers.set(port, setTimeout(() => { void this.probePort(port, gen) }, delayMs))
  }

  private async probePort(port: number, gen: number): Promise<void> {
    const began = Date.now()
    const result = await this.probe({ kind: 'tcp', host: this.host, port, timeoutMs: PORT_PROBE_TIMEOUT_MS }).catch((err: Error) => ({ ok: false, detail: err.message }))
    if (gen !== this.generation) return
    if (result.ok) {
      this.portTimers.delete(port)
      this.pendingPorts.delete(port)
      const before = this.state
      this.updateReady()
      this.emitIfChanged(before, [])
      return
    }
    const attempts = (this.portAttempts.get(port) ?? 0) + 1
    this.portAttempts.set(port, attempts)
    this.schedulePort(port, gen, Math.max(0, this.readinessDelay(attempts) - (Date.now() - began)))
  }

  /** 5, 10, 20, 40 … ms up to readinessPollMs: most apps open their port within tens of milliseconds. */
  private readinessDelay(attempts: number): number {
    return Math.min(this.options.readinessPollMs, FIRST_READINESS_RETRY_MS * 2 ** Math.max(0, attempts - 1))
  }

  private updateReady(): void {
    if (this.ready || !this.active || this.nothingToProbe) return
    if (this.pendingPorts.size > 0) return
    if (this.runs.every((r) => !r.check.readiness || r.passedSinceStart)) this.ready = true
  }

  private emitIfChanged(before: HealthState, changes: CheckChange[]): void {
    const after = this.state
    if (after.ready === before.ready && changes.length === 0 && sameChecks(before.checks, after.checks)) return
    this.listener(after, changes)
  }
}

function sameChecks(a: Record<string, CheckStatus>, b: Record<string, CheckStatus>): boolean {
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  return keys.every((k) => a[k] === b[k])
}
