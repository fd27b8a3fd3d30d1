import { isIP } from 'node:net'
import { z } from 'zod'
import { RegionSchema } from './app-config.js'
import { MachineIdSchema, NodeNameSchema } from './catalog-records.js'
import { ERROR_TABLE, type ErrorCode } from './errors.js'

/**
 * What an edge tells a worker over the backhaul (issue 7, docs/backhaul.md): one TLS 1.3 connection per
 * pair of nodes, both sides holding a fleet certificate, carrying framed streams. A stream opens with an
 * OPEN frame whose payload is the JSON `BackhaulOpen` below — the Machine to reach and the original client
 * — which the worker parses with this schema, checks against its own catalog and strips. It answers
 * OPEN_OK (then bytes flow as they would on a direct connection) or OPEN_FAIL with a `BackhaulRefusal`.
 */

/** TLS ALPN of the backhaul: a worker and an edge of different protocol versions fail at the handshake. */
export const BACKHAUL_ALPN = 'edgeproxy-backhaul/1'

export const BACKHAUL_LIMITS = {
  /** OPEN, OPEN_FAIL and RST payloads (JSON): a preamble is ~300 bytes. */
  controlPayloadBytes: 4096,
  /** Bytes a sender may have in flight per stream before the receiver grants more (as yamux's 256 KiB). */
  streamWindowBytes: 256 * 1024,
  /** Streams open at once on one connection; an OPEN beyond it is refused. */
  streamsPerConnection: 16_384,
} as const

const IpSchema = z.string().max(64).refine((s) => isIP(s) !== 0, 'must be an IP address')
const PortSchema = z.number().int().min(0).max(65535)

/** The client as the edge saw it: the worker writes the PROXY header from these, never from the edge's address. */
export const BackhaulClientSchema = z.strictObject({
  ip: IpSchema,
  port: PortSchema,
  /** The address and port the client dialled on the edge (the PROXY header's destination). */
  localAddress: IpSchema,
  localPort: PortSchema,
  /** TLS was terminated on the edge. */
  tls: z.boolean(),
  servername: z.string().max(253).optional(),
})
export type BackhaulClient = z.infer<typeof BackhaulClientSchema>

export const BackhaulOpenSchema = z.strictObject({
  v: z.literal(1),
  machine: MachineIdSchema,
  /** The Machine's port: the worker accepts only an internal_port of the app's services. */
  port: z.number().int().min(1).max(65535),
  edge: z.strictObject({ node: NodeNameSchema, region: RegionSchema }),
  reqId: z.string().max(64).optional(),
  client: BackhaulClientSchema.optional(),
  /** The port's proxy_proto handler: the worker writes this PROXY header version first. */
  proxyProto: z.enum(['v1', 'v2']).optional(),
}).refine((o) => o.proxyProto === undefined || o.client !== undefined, { path: ['client'], message: 'is required with proxyProto' })
export type BackhaulOpen = z.infer<typeof BackhaulOpenSchema>

const ERROR_CODES = Object.keys(ERROR_TABLE) as [ErrorCode, ...ErrorCode[]]

/** Why a worker refused an OPEN or reset a stream; `code` is one of edgeproxy's error codes. */
export const BackhaulRefusalSchema = z.strictObject({
  code: z.enum(ERROR_CODES),
  message: z.string().max(1024),
  /** The worker's socket error (ECONNREFUSED…), so the edge can tell a refusal from a timeout as for a local Machine. */
  errno: z.string().regex(/^E[A-Z0-9]{1,31}$/).optional(),
})
export type BackhaulRefusal = z.infer<typeof BackhaulRefusalSchema>

/** JSON bytes → a checked value, or a message naming the first bad field. */
export function parseBackhaulJson<T>(schema: z.ZodType<T>, bytes: Buffer, what: string): T | string {
  if (bytes.length > BACKHAUL_LIMITS.controlPayloadBytes) return `${what} is ${bytes.length} bytes, over the ${BACKHAUL_LIMITS.controlPayloadBytes}-byte limit`
  let raw: unknown
  try {
    raw = JSON.parse(bytes.toString('utf8'))
  } catch {
    return `${what} is not JSON`
  }
  const r = schema.safeParse(raw)
  if (r.success) return r.data
  const issue = r.error.issues[0]
  return `${what}: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`
}
