import { z } from 'zod'

/** Go's time.ParseDuration units, as fly.toml uses them ("500ms", "10s", "1m30s"). */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
}

const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y

/** Parses a Go duration string into milliseconds; undefined when the text is not one. */
export function parseGoDuration(text: string): number | undefined {
  const s = text.trim()
  if (s === '0') return 0
  if (s.length === 0) return undefined
  let total = 0
  PART.lastIndex = 0
  while (PART.lastIndex < s.length) {
    const m = PART.exec(s)
    if (m === null) return undefined
    total += Number(m[1]) * UNIT_MS[m[2]]
  }
  return total
}

/**
 * A duration field: a Go duration string, or a bare number in `bareUnitMs` (fly.toml reads a bare integer
 * as milliseconds in check sections and as seconds for kill_timeout). Output: milliseconds.
 */
export function durationMs(bareUnitMs: number) {
  return z.union([z.number(), z.string()]).transform((value, ctx) => {
    const ms = typeof value === 'number' ? value * bareUnitMs : parseGoDuration(value)
    if (ms === undefined || !Number.isFinite(ms) || ms < 0) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as "500ms", "10s" or "1m30s", got ${JSON.stringify(value)}` })
      return z.NEVER
    }
    return Math.round(ms)
  })
}
