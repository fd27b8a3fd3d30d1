import { z } from 'zod'
import { EdgeProxyError } from './errors.js'
import { formatPath } from './parse-app-config.js'

/** Bodies and query strings of the admin API (docs/configuration.md#admin-api). */

const Flag = z.enum(['1', '0', 'true', 'false']).transform((v) => v === '1' || v === 'true')

export const MachineCreateBodySchema = z.strictObject({
  region: z.string().optional(),
  node: z.string().optional(),
  cmd: z.array(z.string()).optional(),
  env: z.record(z.string(), z.string()).optional(),
  processGroup: z.string().optional(),
  desired: z.enum(['started', 'stopped']).optional(),
  id: z.string().optional(),
})
export type MachineCreateBody = z.infer<typeof MachineCreateBodySchema>

export const DeployQuerySchema = z.strictObject({
  hostnames: z.string().optional().transform((s) => (s === undefined || s === '' ? undefined : s.split(',').map((h) => h.trim()))),
  strict: Flag.optional(),
})

export const EventsQuerySchema = z.strictObject({
  from: z.coerce.number().int().min(1).optional(),
  follow: Flag.optional(),
  app: z.string().optional(),
})

export const MachinesQuerySchema = z.strictObject({
  app: z.string().optional(),
  node: z.string().optional(),
})

export const LogsQuerySchema = z.strictObject({
  follow: Flag.optional(),
  tail: z.coerce.number().int().min(0).max(100_000).optional(),
})

export const CertBodySchema = z.strictObject({
  hostname: z.string(),
  certPem: z.string(),
  keyPem: z.string(),
})

/** Parses untrusted API input; a failure names the field (`query.from: expected number`). */
export function parseInput<T extends z.ZodType>(schema: T, value: unknown, where: string): z.output<T> {
  const r = schema.safeParse(value ?? {})
  if (r.success) return r.data
  const issue = r.error.issues[0]
  const path = formatPath([where, ...issue.path])
  const message = issue.code === 'unrecognized_keys' ? `unknown field ${formatPath([where, ...issue.path, (issue as { keys: string[] }).keys[0]])}` : `${path}: ${issue.message.replace(/^Invalid input: /, '')}`
  throw new EdgeProxyError('EP_INVALID_REQUEST', message, { path })
}
