import { isToken } from '../http/token-table.js'

/** Why a replay found no target (FLY-SPEC §6 `fly-replay-failed` reason). */
export type ReplayFailure = 'timeout' | 'retries_exhausted' | 'no_candidate'

/** A field value as the grammar of fly-replay has it: a token as is, anything else quoted. */
export function fieldValue(v: string): string {
  if (isToken(v, 0, v.length)) return v
  return `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`
}

/** Microseconds since the epoch, as `t=` of fly-replay-src carries them. */
export function nowMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000)
}

/** `fly-replay-src: instance=<id>;region=<r>;t=<µs>[;state=<s>]` — where the replayed request came from. */
export function replaySrcLine(instance: string, region: string, t: number, state: string | undefined): string {
  let v = `instance=${instance};region=${fieldValue(region)};t=${t}`
  if (state !== undefined) v += `;state=${fieldValue(state)}`
  return `fly-replay-src: ${v}\r\n`
}

export interface FailedReplay {
  /** The Machine the replay asked for (instance or prefer_instance), if any. */
  instance: string | undefined
  app: string
  regions: readonly string[] | undefined
  /** The Machine whose response asked for the replay. */
  source: string
  reason: ReplayFailure
  elapsedMs: number
}

/**
 * `fly-replay-failed: instance=…;app=…;region=…;replay_source=<id>;reason=…;elapsed_ms=N` on the request a
 * fallback sends back to the app (FLY-SPEC §6); fields with nothing to say are left out.
 */
export function replayFailedLine(f: FailedReplay): string {
  let v = ''
  if (f.instance !== undefined) v += `instance=${f.instance};`
  v += `app=${f.app};`
  if (f.regions !== undefined) v += `region=${fieldValue(f.regions.join(','))};`
  v += `replay_source=${f.source};reason=${f.reason};elapsed_ms=${Math.max(0, Math.round(f.elapsedMs))}`
  return `fly-replay-failed: ${v}\r\n`
}
