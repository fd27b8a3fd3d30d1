import { z } from 'zod'
import { AppNameSchema } from './app-config.js'
import {
  AppRecordSchema, CertRecordSchema, CheckStatusSchema, MachineIdSchema, MachineRecordSchema, MachineStateSchema,
  NodeNameSchema, NodeRecordSchema,
} from './catalog-records.js'

/**
 * Catalog events (DESIGN §2): every applied change, local or from gossip, is diffed into these. Each carries
 * what a consumer needs to update its own state without reading Automerge: upserts carry the whole record,
 * small changes carry the new values. `seq` is local to the node and has no gaps.
 */
const Envelope = {
  seq: z.number().int().positive(),
  /** ms since the epoch, when this node applied it. */
  ts: z.number(),
  /** Node whose change produced the event (this node for local writes and derived events). */
  origin: z.string(),
}

export const CatalogEventSchema = z.discriminatedUnion('type', [
  z.strictObject({ ...Envelope, type: z.literal('app.upserted'), app: AppRecordSchema }),
  z.strictObject({ ...Envelope, type: z.literal('app.removed'), app: AppNameSchema }),
  z.strictObject({ ...Envelope, type: z.literal('machine.upserted'), machine: MachineRecordSchema }),
  z.strictObject({
    ...Envelope,
    type: z.literal('machine.state'),
    app: AppNameSchema,
    machineId: MachineIdSchema,
    state: MachineStateSchema,
    previous: MachineStateSchema,
    reason: z.string(),
    privateAddr: z.string().optional(),
    /** When the host observed it (the host's clock). */
    at: z.number(),
  }),
  z.strictObject({ ...Envelope, type: z.literal('machine.removed'), app: AppNameSchema, machineId: MachineIdSchema }),
  z.strictObject({
    ...Envelope,
    type: z.literal('health.changed'),
    app: AppNameSchema,
    machineId: MachineIdSchema,
    checks: z.record(z.string(), CheckStatusSchema),
    ready: z.boolean(),
    at: z.number(),
  }),
  z.strictObject({ ...Envelope, type: z.literal('node.joined'), node: NodeRecordSchema }),
  z.strictObject({ ...Envelope, type: z.literal('node.updated'), node: NodeRecordSchema }),
  z.strictObject({ ...Envelope, type: z.literal('node.left'), node: NodeNameSchema }),
  /** Derived locally by membership: the node's heartbeat is older than the timeout. Nothing is deleted. */
  z.strictObject({ ...Envelope, type: z.literal('node.down'), node: NodeNameSchema, lastSeen: z.number() }),
  z.strictObject({ ...Envelope, type: z.literal('node.up'), node: NodeNameSchema }),
  z.strictObject({ ...Envelope, type: z.literal('cert.upserted'), cert: CertRecordSchema }),
  z.strictObject({ ...Envelope, type: z.literal('cert.removed'), hostname: z.string() }),
  /** A document could not be loaded or a change for it could not be applied; it is set aside. */
  z.strictObject({ ...Envelope, type: z.literal('catalog.quarantined'), docId: z.string(), reason: z.string() }),
])

export type CatalogEvent = z.infer<typeof CatalogEventSchema>
export type CatalogEventType = CatalogEvent['type']
export type CatalogEventOf<T extends CatalogEventType> = Extract<CatalogEvent, { type: T }>

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
/** An event before the log gives it a seq and a timestamp. */
export type CatalogEventBody = DistributiveOmit<CatalogEvent, 'seq' | 'ts' | 'origin'>
