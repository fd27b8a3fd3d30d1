/** Autostart and autostop settings (issue 8, FLY-SPEC §5), with their defaults in one place. */
export interface AutoscaleInit {
  /**
   * How long a request may wait for a Machine started for it to become ready (first passing check), then
   * 503 EP_AUTOSTART_TIMEOUT. FLY-SPEC §5: configurable, default 30 s.
   */
  wakeTimeoutMs?: number
  /**
   * After a Machine woken for a request became ready, connection refusals to it are retried this long
   * instead of failing the request (FLY-SPEC §10: cold-start 502s when the port flaps while the app boots).
   */
  wakeRetryWindowMs?: number
  /** The autostop pass runs this often per app and region (FLY-SPEC §5: "every few minutes"; default 60 s, ≥ 1 s). */
  autostopIntervalMs?: number
  /**
   * A Machine chosen for autostop is cordoned, then given this long for its in-flight requests to finish
   * before it is stopped (FLY-SPEC §5 stop sequence: "we use 5 s").
   */
  drainMs?: number
}

export interface AutoscaleOptions {
  wakeTimeoutMs: number
  wakeRetryWindowMs: number
  autostopIntervalMs: number
  drainMs: number
}

export const MIN_AUTOSTOP_INTERVAL_MS = 1000

export const DEFAULT_AUTOSCALE_OPTIONS: AutoscaleOptions = {
  wakeTimeoutMs: 30_000,
  wakeRetryWindowMs: 10_000,
  autostopIntervalMs: 60_000,
  drainMs: 5_000,
}

export function resolveAutoscaleOptions(init: AutoscaleInit = {}): AutoscaleOptions {
  const o = { ...DEFAULT_AUTOSCALE_OPTIONS, ...stripUndefined(init) }
  if (o.autostopIntervalMs < MIN_AUTOSTOP_INTERVAL_MS) throw new RangeError(`autostopIntervalMs must be at least ${MIN_AUTOSTOP_INTERVAL_MS} ms, got ${o.autostopIntervalMs}`)
  return o
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {}
  for (const k of Object.keys(o) as Array<keyof T>) if (o[k] !== undefined) out[k] = o[k]
  return out
}
