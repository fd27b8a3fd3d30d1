import { z } from 'zod'
import { AppConfigSchema, AppNameSchema, RegionSchema, SignalSchema } from './app-config.js'

/**
 * Catalog records: the plain-JSON view of the Automerge documents (DESIGN §2). Every consumer — the proxy's
 * routing index, the supervisor, the CLI — sees these, never Automerge objects.
 */

export const NODE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
export const NodeNameSchema = z.string().regex(NODE_NAME, 'must be 1–63 lowercase letters, digits or dashes')
export const MACHINE_ID = /^[0-9a-f]{14}$/
export const MachineIdSchema = z.string().regex(MACHINE_ID, 'must be 14 lowercase hex digits')

export const ROLES = ['edge', 'worker'] as const
export const RoleSchema = z.enum(ROLES)
export type Role = z.infer<typeof RoleSchema>

/** Document ids: `app:<name>` (config + Machines of one app) and `nodes` (fleet membership). */
export const DocIdSchema = z.string().regex(/^(app:[a-z0-9-]{1,63}|nodes|cert:[a-z0-9.*-]{1,253})$/, 'must be "app:<name>", "nodes" or "cert:<host>"')
export type DocId = z.infer<typeof DocIdSchema>
export const appDocId = (app: string): DocId => `app:${app}`

export const HOSTNAME = /^(?=.{1,253}$)(\*\.)?([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/
export const HostnameSchema = z.string().toLowerCase().regex(HOSTNAME, 'must be a DNS name such as "www.example.com"')
  .refine((h) => !h.endsWith('.flycast'), 'names under .flycast are private (Flycast); use `edgeproxy apps flycast` instead')

export const AppRecordSchema = z.strictObject({
  name: AppNameSchema,
  config: AppConfigSchema,
  /** Extra public hostnames besides `<app>.<domain>`. */
  hostnames: z.array(HostnameSchema),
  /** Private Flycast address (an IPv4 in the fleet's private range), once allocated. */
  flycast: z.string().optional(),
  /** Increases with every deploy; Machines record the version they were created from. */
  version: z.number().int().nonnegative(),
  createdAt: z.number(),
  updatedAt: z.number(),
})
export type AppRecord = z.infer<typeof AppRecordSchema>

/** What the API asks for. Written only through the API (control plane). */
export const DESIRED_STATES = ['started', 'stopped', 'suspended', 'destroyed'] as const
export const DesiredStateSchema = z.enum(DESIRED_STATES)
export type DesiredState = z.infer<typeof DesiredStateSchema>

/** What the host node's supervisor observed. Written only by the host node. */
export const MACHINE_STATES = ['created', 'starting', 'started', 'stopping', 'stopped', 'suspending', 'suspended', 'failed', 'destroying', 'destroyed'] as const
export const MachineStateSchema = z.enum(MACHINE_STATES)
export type MachineState = z.infer<typeof MachineStateSchema>

export const CHECK_STATUSES = ['passing', 'warning', 'critical'] as const
export const CheckStatusSchema = z.enum(CHECK_STATUSES)
export type CheckStatus = z.infer<typeof CheckStatusSchema>

export const EnvMapSchema = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name'), z.string())

export const MachineSpecSchema = z.strictObject({
  /** argv; the supervisor spawns it without a shell. Empty means: the app config's `cmd`. */
  cmd: z.array(z.string()),
  env: EnvMapSchema,
  /** Process group from fly.toml `[processes]`; `app` when the app defines none. */
  processGroup: z.string(),
})
export type MachineSpec = z.infer<typeof MachineSpecSchema>

export const MachineRecordSchema = z.strictObject({
  id: MachineIdSchema,
  app: AppNameSchema,
  region: RegionSchema,
  /** The node whose supervisor runs it. */
  node: NodeNameSchema,
  spec: MachineSpecSchema,
  /** App config version the Machine was created from. */
  appVersion: z.number().int().nonnegative(),
  createdAt: z.number(),
  // desired side (API, autostart, autostop)
  desired: DesiredStateSchema,
  desiredReason: z.string(),
  desiredAt: z.number(),
  /** Takes no new traffic (autostop drains it before stopping). */
  cordoned: z.boolean(),
  /** This stop's signal and grace period, when the request named them (else fly.toml's kill_signal/kill_timeout). */
  stopSignal: SignalSchema.optional(),
  stopTimeout: z.number().int().nonnegative().optional(),
  // observed side (host node only)
  state: MachineStateSchema,
  stateReason: z.string(),
  stateAt: z.number(),
  /** Address the Machine listens on, on its host (loopback on one host), once assigned. */
  privateAddr: z.string().optional(),
  // health (host node only)
  checks: z.record(z.string(), CheckStatusSchema),
  /** True after the first passing check since the last start (or once its port accepts when it has no checks). */
  ready: z.boolean(),
  healthAt: z.number(),
})
export type MachineRecord = z.infer<typeof MachineRecordSchema>

export const NodeLoadSchema = z.strictObject({
  /** Machines the node runs now. */
  machines: z.number().int().nonnegative(),
  /** Open client connections on the node's proxy. */
  connections: z.number().int().nonnegative(),
})

export const NodeRecordSchema = z.strictObject({
  name: NodeNameSchema,
  region: RegionSchema,
  roles: z.array(RoleSchema).min(1),
  /** Admin API address (host:port). */
  admin: z.string().optional(),
  /** libp2p listen multiaddrs and peer id. */
  gossip: z.array(z.string()),
  peerId: z.string().optional(),
  /** mTLS backhaul listener (host:port), on workers. */
  backhaul: z.string().optional(),
  /** Address public listeners bind on edges. */
  publicAddr: z.string().optional(),
  status: z.enum(['active', 'left']),
  startedAt: z.number(),
  lastSeen: z.number(),
  load: NodeLoadSchema,
  version: z.string(),
})
export type NodeRecord = z.infer<typeof NodeRecordSchema>

export const CertRecordSchema = z.strictObject({
  hostname: HostnameSchema,
  certPem: z.string().includes('-----BEGIN CERTIFICATE-----', { message: 'must be a PEM certificate' }),
  keyPem: z.string().includes('PRIVATE KEY-----', { message: 'must be a PEM private key' }),
  addedAt: z.number(),
})
export type CertRecord = z.infer<typeof CertRecordSchema>

export const QuarantineRecordSchema = z.strictObject({
  docId: z.string(),
  reason: z.string(),
  at: z.number(),
})
export type QuarantineRecord = z.infer<typeof QuarantineRecordSchema>
