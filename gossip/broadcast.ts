import { type GossipsubMessage, type Message, TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { CatalogReplica, Subscription } from '../catalog/catalog-api.js'
import type { DocId } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { type ChangesMessage, ChangesMessageSchema, GOSSIP_LIMITS } from '../schemas/gossip-messages.js'
import type { GossipPubSub } from './libp2p-node.js'
import type { Reach } from './reach.js'
import type { DropReason, GossipCounters } from './stats.js'
import { Throttle } from './throttle.js'
import { decodeWire, encodeWire } from './wire-codec.js'

/**
 * Broadcast of catalog changes (DESIGN §3). Local changes made within `coalesceMs` are published as one
 * `{docId, changes}` message per document — per-message CPU, not bytes, is what gossip costs (PERF-NOTES).
 * Receiving is two-staged: the topic validator checks rate, size, CBOR and schema (Reject lowers the
 * sender's score); then the catalog applies the changes and only then is the message forwarded (async
 * validation), so invalid Automerge bytes and poison changes stop at the first hop.
 */
export const CHANGES_TOPIC = 'edgeproxy/changes/1'

export type BroadcastReplica = Pick<CatalogReplica, 'onLocalChange' | 'applyRemoteChanges' | 'isQuarantined'>

export interface BroadcastOptions {
  coalesceMs: number
  maxMessageBytes: number
  /** Messages per second (sustained, burst) accepted from one forwarding peer. */
  perPeerPerSecond: number
  perPeerBurst: number
}

export interface BroadcastDeps {
  pubsub: GossipPubSub
  replica: BroadcastReplica
  log: Logger
  counters: GossipCounters
  /** Anti-entropy: what broadcast cannot deliver, sync does. */
  sync: { request(peer: string, reason: string): void; requestAll(reason: string): void }
  connectedPeers(): number
  /** Who a publish reaches, so that receivers skip needless forwarding. */
  reach: Reach
}

/** Room for the CBOR envelope around the changes (version, docId, array headers). */
const ENVELOPE_BYTES = 512

interface Batch { changes: Uint8Array[]; bytes: number }

export class Broadcast {
  private readonly pending = new Map<DocId, Batch>()
  private readonly parsed = new WeakMap<Uint8Array, ChangesMessage>()
  private readonly inflight = new Set<Promise<void>>()
  private readonly throttle: Throttle
  private timer: NodeJS.Timeout | undefined
  private local: Subscription | undefined

  constructor(private readonly d: BroadcastDeps, private readonly o: BroadcastOptions) {
    this.throttle = new Throttle({ perSecond: o.perPeerPerSecond, burst: o.perPeerBurst })
  }

  start(): void {
    this.d.pubsub.topicValidators.set(CHANGES_TOPIC, this.validate)
    this.d.pubsub.addEventListener('gossipsub:message', this.onMessage)
    this.d.pubsub.subscribe(CHANGES_TOPIC)
    this.local = this.d.replica.onLocalChange((docId, changes) => this.enqueue(docId, changes))
  }

  /** Publishes what is pending now and waits for every publish (graceful stop: `left` must go out). */
  async flush(): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    for (const docId of [...this.pending.keys()]) this.publishPending(docId)
    await Promise.allSettled([...this.inflight])
  }

  async stop(): Promise<void> {
    this.local?.close()
    this.local = undefined
    await this.flush()
    this.d.pubsub.removeEventListener('gossipsub:message', this.onMessage)
    this.d.pubsub.topicValidators.delete(CHANGES_TOPIC)
  }

  /**
   * Changes a sync session brought, for peers that may lack them (sync-relay.ts). Published at once, sorted and
   * without a reach list, so that every node relaying the same changes publishes the same bytes: gossipsub's
   * message id is a hash of them, so a node that already saw the message does not publish it again, and
   * receivers drop the copies of other relayers as duplicates.
   */
  relay(docId: DocId, changes: Uint8Array[]): void {
    const budget = this.o.maxMessageBytes - ENVELOPE_BYTES
    const sorted = changes.filter((c) => c.byteLength <= budget).sort(Buffer.compare) // bigger ones keep spreading by sync
    for (let i = 0; i < sorted.length;) {
      const chunk: Uint8Array[] = []
      let bytes = 0
      while (i < sorted.length && chunk.length < GOSSIP_LIMITS.changesPerMessage && bytes + sorted[i].byteLength <= budget) {
        bytes += sorted[i].byteLength
        chunk.push(sorted[i++])
      }
      this.track(this.d.pubsub.publish(CHANGES_TOPIC, encodeWire({ v: 1, docId, changes: chunk } satisfies ChangesMessage), { ignoreDuplicatePublishError: true })
        .then((r) => { if (r.recipients.length > 0) this.d.counters.changesRelayed++ }), docId)
    }
  }

  private enqueue(docId: DocId, changes: Uint8Array[]): void {
    const budget = this.o.maxMessageBytes - ENVELOPE_BYTES
    for (const change of changes) {
      if (change.byteLength > budget) {
        this.d.counters.changesTooBigToBroadcast++
        this.d.sync.requestAll(`a change to ${docId} is too big to broadcast`)
        continue
      }
      let batch = this.pending.get(docId)
      if (batch !== undefined && (batch.bytes + change.byteLength > budget || batch.changes.length >= GOSSIP_LIMITS.changesPerMessage)) {
        this.publishPending(docId)
        batch = undefined
      }
      if (batch === undefined) {
        batch = { changes: [], bytes: 0 }
        this.pending.set(docId, batch)
      }
      batch.changes.push(change)
      batch.bytes += change.byteLength
    }
    if (this.timer === undefined && this.pending.size > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        for (const id of [...this.pending.keys()]) this.publishPending(id)
      }, this.o.coalesceMs)
    }
  }

  private publishPending(docId: DocId): void {
    const batch = this.pending.get(docId)
    if (batch === undefined) return
    this.pending.delete(docId)
    const reach = this.d.reach.encode(CHANGES_TOPIC)
    const data = encodeWire({ v: 1, docId, changes: batch.changes, ...(reach === undefined ? {} : { reach }) } satisfies ChangesMessage)
    this.track(this.d.pubsub.publish(CHANGES_TOPIC, data).then((r) => {
      this.d.counters.changesPublished++
      if (r.recipients.length === 0) {
        this.d.counters.changesPublishedToNobody++
        // nobody subscribed yet (just connected, or alone): sync carries it to whoever is connected
        if (this.d.connectedPeers() > 0) this.d.sync.requestAll('a publish reached no peer')
      }
    }), docId)
  }

  private track(publish: Promise<void>, docId: DocId): void {
    const p = publish.catch((err: unknown) => {
      this.d.log.warn({ err, docId }, 'publishing changes failed; anti-entropy will carry them')
    }).finally(() => this.inflight.delete(p))
    this.inflight.add(p)
  }

  /** Stage one, synchronous: anything malformed is rejected before it costs the catalog anything. */
  private readonly validate = (peer: PeerId, msg: Message): TopicValidatorResult => {
    if (!this.throttle.take(peer.toString())) return this.drop('throttled', TopicValidatorResult.Ignore)
    const r = decodeWire(ChangesMessageSchema, msg.data, this.o.maxMessageBytes)
    if (!r.ok) {
      this.d.log.debug({ peer: peer.toString(), reason: r.reason, detail: r.detail }, 'changes message rejected')
      return this.drop(r.reason, TopicValidatorResult.Reject)
    }
    this.parsed.set(msg.data, r.value)
    return TopicValidatorResult.Accept
  }

  private readonly onMessage = (evt: CustomEvent<GossipsubMessage>): void => {
    const { msg, msgId, propagationSource } = evt.detail
    if (msg.topic !== CHANGES_TOPIC) return
    const parsed = this.parsed.get(msg.data)
    if (parsed === undefined) return // not validated by us (cannot happen with our validator installed)
    this.parsed.delete(msg.data)
    this.d.counters.changesReceived++
    void this.apply(parsed, msgId, propagationSource)
  }

  /** Stage two: apply, then tell gossipsub whether to forward (Accept) or penalise (Reject). */
  private async apply(m: ChangesMessage, msgId: string, source: PeerId): Promise<void> {
    const peer = source.toString()
    let result: TopicValidatorResult
    if (this.d.replica.isQuarantined(m.docId)) {
      result = this.drop('quarantined', TopicValidatorResult.Ignore)
    } else {
      try {
        const r = await this.d.replica.applyRemoteChanges(m.docId, m.changes, peer)
        if (this.d.replica.isQuarantined(m.docId)) {
          result = this.poison(m.docId, source, undefined)
        } else {
          this.d.counters.changesApplied++
          if (r.missingDeps) {
            this.d.counters.changesMissingDeps++
            // the forwarder applied these before forwarding, so it holds their dependencies too
            this.d.sync.request(peer, `missing dependencies of ${m.docId}`)
            result = this.forwardOrNot(m, msgId, peer)
          } else if (r.changes.length === 0) {
            // nothing new here (a relay of what this node already got another way): its peers most likely
            // have it too, and passing it on would flood the fleet with copies (sync-relay.ts)
            this.d.counters.changesAlreadyHeld++
            result = TopicValidatorResult.Ignore
          } else {
            result = this.forwardOrNot(m, msgId, peer)
          }
        }
      } catch (err) {
        result = this.applyFailed(m.docId, source, err)
      }
    }
    this.d.pubsub.reportMessageValidationResult(msgId, peer, result)
  }

  /**
   * Ignore (applied here, not forwarded) when the publisher already reached every peer this node would tell;
   * otherwise forwarded to the mesh peers it did not reach.
   */
  private forwardOrNot(m: ChangesMessage, msgId: string, source: string): TopicValidatorResult {
    if (this.d.reach.forward(CHANGES_TOPIC, msgId, source, m.reach)) return TopicValidatorResult.Accept
    this.d.counters.changesNotForwarded++
    return TopicValidatorResult.Ignore
  }

  private applyFailed(docId: DocId, source: PeerId, err: unknown): TopicValidatorResult {
    if (EdgeProxyError.is(err, 'EP_GOSSIP_MESSAGE_INVALID')) return this.poison(docId, source, err)
    if (this.d.replica.isQuarantined(docId) || EdgeProxyError.is(err, 'EP_DOC_QUARANTINED')) return this.drop('quarantined', TopicValidatorResult.Ignore)
    if (isInvalidChanges(err)) {
      this.d.log.debug({ err, docId, peer: source.toString() }, 'changes message carried invalid Automerge bytes')
      return this.drop('invalid-changes', TopicValidatorResult.Reject)
    }
    this.d.log.warn({ err, docId }, 'applying remote changes failed; anti-entropy will retry')
    return this.drop('apply-failed', TopicValidatorResult.Ignore)
  }

  private poison(docId: DocId, source: PeerId, err: unknown): TopicValidatorResult {
    this.d.log.warn({ err, docId, peer: source.toString() }, 'poison changes from a peer refused; not forwarded')
    return this.drop('poison', TopicValidatorResult.Reject)
  }

  private drop(reason: DropReason, result: TopicValidatorResult): TopicValidatorResult {
    this.d.counters.droppedChanges[reason]++
    return result
  }
}

/** The catalog's verdict that the bytes are not Automerge changes (the sender's fault, not ours). */
function isInvalidChanges(err: unknown): boolean {
  return EdgeProxyError.is(err, 'EP_INVALID_REQUEST')
}
