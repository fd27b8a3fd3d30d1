/**
 * Restart policy for a Machine whose process exits while it should be running: restart after an
 * exponentially growing delay, and give up (`failed`, EP_MACHINE_CRASH_LOOP) after `maxCrashes` crashes
 * within `windowMs`. Crashes older than the window are forgotten, so a Machine that crashes once a day
 * always comes back after `baseDelayMs`.
 */
export interface CrashPolicy {
  maxCrashes: number
  windowMs: number
  baseDelayMs: number
  maxDelayMs: number
}

export const DEFAULT_CRASH_POLICY: CrashPolicy = { maxCrashes: 5, windowMs: 60_000, baseDelayMs: 500, maxDelayMs: 30_000 }

export type CrashVerdict =
  | { action: 'restart'; delayMs: number; crashesInWindow: number }
  | { action: 'give-up'; crashesInWindow: number }

export class CrashTracker {
  private crashes: number[] = []

  constructor(private readonly policy: CrashPolicy = DEFAULT_CRASH_POLICY) {
    if (policy.maxCrashes < 1) throw new RangeError('crash policy maxCrashes must be ≥ 1')
  }

  get count(): number { return this.crashes.length }

  /** Records a crash at `now` and says what to do next. */
  record(now: number): CrashVerdict {
    this.crashes = this.crashes.filter((t) => now - t < this.policy.windowMs)
    this.crashes.push(now)
    const n = this.crashes.length
    if (n >= this.policy.maxCrashes) return { action: 'give-up', crashesInWindow: n }
    const delayMs = Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (n - 1))
    return { action: 'restart', delayMs, crashesInWindow: n }
  }

  /** A new request to run (the API asked again): the past crashes no longer count. */
  reset(): void {
    this.crashes = []
  }
}
