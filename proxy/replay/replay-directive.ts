import { z } from 'zod'
import { AppNameSchema } from '../../schemas/app-config.js'
import { MachineIdSchema } from '../../schemas/catalog-records.js'
import { durationMs } from '../../schemas/duration.js'

/** At most this many replays per request (FLY-SPEC §6, Fly's PA02). */
export const MAX_REPLAYS = 10

/** Bytes of a `application/vnd.fly.replay+json` body we read; a directive is a few hundred bytes. */
export const MAX_DIRECTIVE_BYTES = 64 * 1024

/** Content type of the JSON form (FLY-SPEC §6). */
export const REPLAY_JSON_TYPE = 'application/vnd.fly.replay+json'

const REGION_NAME = /^[a-z0-9]{2,16}$/
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Characters that would break the header block they are copied into. */
const UNSAFE_VALUE = /[\r\n\0]/

/** Headers a transform may not touch: they frame the request, or belong to the proxy. */
const PROTECTED = /^(content-length|transfer-encoding|connection|upgrade|te|keep-alive|proxy-connection|fly-replay.*)$/i

const flag = z.union([z.boolean(), z.enum(['true', 'false'])]).transform((v) => v === true || v === 'true')

const regionList = z.union([z.string(), z.array(z.string())]).transform((v, ctx) => {
  const names = (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim().toLowerCase()).filter((s) => s !== '')
  if (names.length === 0) ctx.addIssue({ code: 'custom', message: 'must name at least one region' })
  for (const n of names) {
    if (!REGION_NAME.test(n)) ctx.addIssue({ code: 'custom', message: `"${n}" is not a region code or alias (such as "iad", "eu" or "any")` })
  }
  return names
})

const machineId = z.string().transform((s) => s.trim().toLowerCase()).pipe(MachineIdSchema)

const headerName = z.string().regex(HEADER_NAME, 'must be a header name').refine((n) => !PROTECTED.test(n), { message: 'cannot be changed by a replay transform' })

const TransformSchema = z.strictObject({
  path: z.string().regex(/^\/[\x21-\x7e]*$/, 'must be a path (and query) starting with "/", without spaces').max(8192).optional(),
  delete_headers: z.array(headerName.refine((n) => n.toLowerCase() !== 'host', { message: 'Host cannot be deleted (set it instead)' })).default([]),
  set_headers: z.array(z.strictObject({
    name: headerName,
    value: z.string().refine((v) => !UNSAFE_VALUE.test(v), { message: 'must not contain CR, LF or NUL' }),
  })).default([]),
})

/**
 * The fields of fly-replay (FLY-SPEC §6), as the app writes them: header fields arrive as strings, the JSON
 * form may use booleans, arrays and the JSON-only `transform`. `cache` and `allow_bypass` (the optional
 * replay cache) are accepted and not acted on.
 */
export const ReplayDirectiveSchema = z.strictObject({
  region: regionList.optional(),
  instance: machineId.optional(),
  prefer_instance: machineId.optional(),
  app: AppNameSchema.optional(),
  state: z.string().max(4096).refine((v) => !UNSAFE_VALUE.test(v), { message: 'must not contain CR, LF or NUL' }).optional(),
  elsewhere: flag.default(false),
  timeout: durationMs(1000).optional(),
  fallback: z.enum(['force_self', 'prefer_self']).optional(),
  transform: TransformSchema.optional(),
  cache: z.unknown().optional(),
  allow_bypass: z.unknown().optional(),
})
export type ReplayDirective = z.output<typeof ReplayDirectiveSchema>

/** One message naming every bad field, or the directive. */
export function toDirective(raw: unknown): ReplayDirective | string {
  const r = ReplayDirectiveSchema.safeParse(raw)
  if (r.success) return r.data
  return r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')
}
