import { z } from 'zod'
import { RegionSchema } from './app-config.js'
import { DocIdSchema, NodeLoadSchema, NodeNameSchema } from './catalog-records.js'

/**
 * Everything gossip puts on the wire (DESIGN §3). Messages travel as CBOR (binary fields stay bytes) and are
 * parsed with these schemas after a byte-size check, so a peer's message is never trusted unparsed.
 */

/** Limits a receiver enforces before and while parsing. Senders stay under them (oversize goes to sync). */
export const GOSSIP_LIMITS = {
  /** One broadcast of changes. Routine changes are ~200 B (PERF-NOTES); bigger bursts split or go to sync. */
  changesMessageBytes: 256 * 1024,
  changesPerMessage: 1024,
  heartbeatBytes: 4 * 1024,
  /** One frame of `/edgeproxy/sync/1`. A digest of 10k documents is ~0.8 MB. */
  syncFrameBytes: 8 * 1024 * 1024,
  digestDocs: 100_000,
  headsPerDoc: 256,
  syncMessagesPerFrame: 1024,
  /** Changes of one document in one push; a longer history is left to Automerge's sync rounds. */
  pushChangesPerDoc: 4096,
  /** Documents a sync responder opens Automerge's protocol for in its pushes (one round trip fewer each). */
  openingsPerSession: 64,
  addrsPerNode: 16,
} as const

const BytesSchema = z.custom<Uint8Array>((v) => v instanceof Uint8Array, { message: 'must be bytes' })
const NonEmptyBytesSchema = BytesSchema.refine((b) => b.byteLength > 0, { message: 'must not be empty' })
/** Automerge change hash as Automerge prints heads. */
export const HeadSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a 64-digit hex change hash')
const PeerIdTextSchema = z.string().min(1).max(128).regex(/^[1-9A-Za-z]+$/, 'must be a base58 peer id')
/**
 * Who the publisher sent a message to (gossip/reach.ts): 8-byte peer fingerprints, the publisher's first.
 * Absent when it had too many peers to list; receivers then forward as plain gossipsub does.
 */
const ReachSchema = BytesSchema.refine((b) => b.byteLength >= 8 && b.byteLength <= 256 * 8 && b.byteLength % 8 === 0, {
  message: 'must be 1 to 256 peer fingerprints of 8 bytes',
})
const MultiaddrTextSchema = z.string().min(1).max(512).startsWith('/', 'must be a multiaddr such as "/ip4/10.0.0.1/tcp/4001"')

/** Topic `edgeproxy/changes/1`: changes made on one node to one document, coalesced over a few ms. */
export const ChangesMessageSchema = z.strictObject({
  v: z.literal(1),
  docId: DocIdSchema,
  changes: z.array(NonEmptyBytesSchema).min(1).max(GOSSIP_LIMITS.changesPerMessage),
  reach: ReachSchema.optional(),
})
export type ChangesMessage = z.infer<typeof ChangesMessageSchema>

/**
 * Topic `edgeproxy/heartbeat/1`: liveness and load, every 2 s. Not a catalog change: writing it into
 * Automerge would grow the membership document's history forever.
 */
export const HeartbeatSchema = z.strictObject({
  v: z.literal(1),
  node: NodeNameSchema,
  region: RegionSchema,
  peerId: PeerIdTextSchema,
  addrs: z.array(MultiaddrTextSchema).max(GOSSIP_LIMITS.addrsPerNode),
  load: NodeLoadSchema,
  /** `left` is sent once on graceful shutdown so peers stop waiting for this node. */
  status: z.enum(['active', 'left']),
  startedAt: z.number().nonnegative(),
  /** Sender's clock, ms since the epoch (informational: receivers time silence on their own clock). */
  sentAt: z.number().nonnegative(),
  reach: ReachSchema.optional(),
  /**
   * sha256 of the sender's anti-entropy digest (gossip/digest.ts) when it sent this: a node whose own digest
   * hash is equal has nothing to sync with the sender, so idle fleets run no sync sessions.
   */
  digestHash: BytesSchema.refine((b) => b.byteLength === 32, { message: 'must be a 32-byte sha256' }).optional(),
})
export type Heartbeat = z.infer<typeof HeartbeatSchema>

/**
 * `/edgeproxy/sync/2`, one frame each way per step:
 *   initiator hello → responder hello (equal digest hashes: bye, done)
 *   initiator digest → responder digest, then the responder's push frames
 *   the initiator's push frames (after it has read the responder's: never both sides writing at once)
 *   initiator sync → responder sync, repeated until neither side has anything left to send
 *   initiator bye
 * A push carries, for each document the sender is ahead on (it holds every head the other reported, or the
 * other lacks the document), exactly the changes the other lacks: no Automerge round trips for those.
 */
export const SyncHelloSchema = z.strictObject({
  t: z.literal('hello'),
  v: z.literal(2),
  node: NodeNameSchema,
  /** sha256 of the sorted digest: equal hashes mean nothing to do. */
  digestHash: BytesSchema.refine((b) => b.byteLength === 32, { message: 'must be 32 bytes' }),
})
export const SyncDigestSchema = z.strictObject({
  t: z.literal('digest'),
  docs: z.array(z.tuple([DocIdSchema, z.array(HeadSchema).max(GOSSIP_LIMITS.headsPerDoc)])).max(GOSSIP_LIMITS.digestDocs),
})
export const SyncMessagesSchema = z.strictObject({
  t: z.literal('sync'),
  msgs: z.array(z.strictObject({ docId: DocIdSchema, msg: NonEmptyBytesSchema.nullable() })).max(GOSSIP_LIMITS.syncMessagesPerFrame),
})
export const SyncPushSchema = z.strictObject({
  t: z.literal('push'),
  docs: z.array(z.strictObject({
    docId: DocIdSchema,
    changes: z.array(NonEmptyBytesSchema).min(1).max(GOSSIP_LIMITS.pushChangesPerDoc),
  })).max(GOSSIP_LIMITS.syncMessagesPerFrame),
  /** More push frames follow. */
  more: z.boolean(),
  /**
   * The responder's first Automerge sync message (heads and a bloom filter of its changes) for documents it
   * holds but does not push: those written on both sides start their rounds one round trip ahead.
   */
  opening: z.array(z.strictObject({ docId: DocIdSchema, msg: NonEmptyBytesSchema })).max(GOSSIP_LIMITS.openingsPerSession).optional(),
})
export const SyncByeSchema = z.strictObject({ t: z.literal('bye'), reason: z.string().max(200).optional() })

export const SyncFrameSchema = z.discriminatedUnion('t', [SyncHelloSchema, SyncDigestSchema, SyncPushSchema, SyncMessagesSchema, SyncByeSchema])
export type SyncFrame = z.infer<typeof SyncFrameSchema>
export type SyncHello = z.infer<typeof SyncHelloSchema>
export type SyncDigest = z.infer<typeof SyncDigestSchema>
export type SyncMessages = z.infer<typeof SyncMessagesSchema>
export type SyncPush = z.infer<typeof SyncPushSchema>
