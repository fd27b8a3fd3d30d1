import { z } from 'zod'
import { type KillSignal, SIGNALS, SignalSchema } from './app-config.js'
import { durationMs } from './duration.js'
import { EdgeProxyError } from './errors.js'

/**
 * Input checks for the Machine API and CLI (`POST /v1/machines/:id/stop`, `machines run --port`): a bad
 * signal name or port becomes a 400 (EP_INVALID_REQUEST) that names the field.
 */

export function parseKillSignal(value: unknown, field = 'signal'): KillSignal {
  const text = typeof value === 'string' ? value.trim().toUpperCase() : value
  const withPrefix = typeof text === 'string' && !text.startsWith('SIG') ? `SIG${text}` : text
  const parsed = SignalSchema.safeParse(withPrefix)
  if (parsed.success) return parsed.data
  throw new EdgeProxyError('EP_INVALID_REQUEST', `${field}: ${JSON.stringify(value)} is not a signal edgeproxy sends; use one of ${SIGNALS.join(', ')}`, { path: field })
}

export function parsePort(value: unknown, field = 'port'): number {
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value
  if (typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535) return n
  throw new EdgeProxyError('EP_INVALID_REQUEST', `${field}: ${JSON.stringify(value)} is not a port; use a whole number from 1 to 65535`, { path: field })
}

/** Body of `POST /v1/machines/:id/stop` (Fly Machines API shape): both optional, defaults from fly.toml. */
export const MachineStopBodySchema = z.strictObject({
  signal: z.string().transform((s, ctx) => {
    try {
      return parseKillSignal(s)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
      return z.NEVER
    }
  }).optional(),
  /** kill_timeout for this stop: a Go duration or whole seconds. */
  timeout: durationMs(1000).refine((ms) => ms <= 300_000, 'must be at most 300s').optional(),
})
export type MachineStopBody = z.infer<typeof MachineStopBodySchema>
