import { type GossipsubMessage, type Message, TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { CatalogReader, CatalogWriter, Subscription } from '../catalog/catalog-api.js'
import type { CatalogEvent } from '../schemas/catalog-events.js'
import type { NodeRecord, Role } from '../schemas/catalog-records.js'
import { GOSSIP_LIMITS, type Heartbeat, HeartbeatSchema } from '../schemas/gossip-messages.js'
import type { DigestWatch } from './digest-watch.js'
import type { GossipPubSub } from './libp2p-node.js'
import type { Reach } from './reach.js'
import type { GossipCounters } from './stats.js'
import { Throttle } from './throttle.js'
import { decodeWire, encodeWire } from './wire-codec.js'

/**
 * Membership (DESIGN §3). The durable node record goes through the catalog at start and whenever it changes
 * (the catalog refreshes lastSeen about every five minutes); liveness travels as a heartbeat on its own topic
 * every `heartbeatMs`. A node not heard for `downAfterMs` gets a derived `node.down`, and `node.up` when heard
 * again — nothing is deleted. Silence is timed on this node's clock, so clock skew between nodes is harmless.
 */
export const HEARTBEAT_TOPIC = 'edgeproxy/heartbeat/1'

export type NodeLoad = NodeRecord['load']

/** What this node says about itself; the rest (peer id, addresses, start time) gossip fills in. */
export interface SelfDescription {
  region: string
  roles: Role[]
  admin?: string
  backhaul?: string
  publicAddr?: string
  version: string
}

export type MembershipCatalog = Pick<CatalogReader, 'nodeName' | 'listNodes' | 'getNode' | 'subscribe' | 'snapshot'>
  & Pick<CatalogWriter, 'upsertSelf' | 'markSelfLeft' | 'appendDerived'>

export interface MembershipOptions {
  heartbeatMs: number
  downAfterMs: number
  perPeerPerSecond: number
  perPeerBurst: number
}

export interface MembershipDeps {
  catalog: MembershipCatalog
  /** Absent when the node runs alone (no fleet key): the record is still written, nothing is sent. */
  pubsub: GossipPubSub | undefined
  log: Logger
  counters: GossipCounters
  self: SelfDescription
  peerId: string
  multiaddrs(): string[]
  load(): NodeLoad
  /** A node's peer id and addresses became known (heartbeat or record): the dialer may connect to it. */
  onPeerLearned(node: string, peerId: string, addrs: string[]): void
  /** A node left the fleet: the dialer stops trying it. */
  onPeerGone(node: string, peerId: string): void
  /** With pubsub: who a heartbeat reaches (receivers skip needless forwarding). */
  reach?: Reach
  /** With pubsub: this node's digest hash, sent in heartbeats, and what peers' heartbeats say of theirs. */
  digests?: DigestWatch
}

export type LivenessState = 'self' | 'up' | 'down' | 'left'

export interface NodeLiveness {
  name: string
  region: string | undefined
  state: LivenessState
  peerId: string | undefined
  /** Wall-clock time this node last heard the other (its heartbeat), or its record's lastSeen. */
  lastHeartbeatAt: number | undefined
  load: NodeLoad | undefined
}

interface Tracked {
  state: 'up' | 'down'
  /** performance.now() of the last heartbeat, or of when the node became known. */
  heardAt: number
  lastHeartbeatAt: number | undefined
  peerId: string | undefined
  region: string | undefined
  load: NodeLoad | undefined
}

export class Membership {
  private readonly tracked = new Map<string, Tracked>()
  private readonly left = new Set<string>()
  private readonly parsed = new WeakMap<Uint8Array, Heartbeat>()
  private readonly throttle: Throttle
  private readonly startedAt = Date.now()
  /** Derived events on their way to the log; stop waits for them. */
  private readonly writing = new Set<Promise<void>>()
  private events: Subscription | undefined
  private heartbeatTimer: NodeJS.Timeout | undefined
  private sweepTimer: NodeJS.Timeout | undefined
  private lastImpostorLog = 0

  constructor(private readonly d: MembershipDeps, private readonly o: MembershipOptions) {
    this.throttle = new Throttle({ perSecond: o.perPeerPerSecond, burst: o.perPeerBurst })
  }

  get nodeName(): string { return this.d.catalog.nodeName }

  async start(): Promise<void> {
    await this.writeSelf()
    const snap = this.d.catalog.snapshot()
    const down = new Set(snap.downNodes)
    for (const n of snap.nodes) this.learnRecord(n, down.has(n.name) ? 'down' : 'up')
    this.events = this.d.catalog.subscribe({ fromSeq: snap.seq + 1 }, (e) => this.onCatalogEvent(e))
    const pubsub = this.d.pubsub
    if (pubsub !== undefined) {
      pubsub.topicValidators.set(HEARTBEAT_TOPIC, this.validate)
      pubsub.addEventListener('gossipsub:message', this.onMessage)
      pubsub.subscribe(HEARTBEAT_TOPIC)
    }
    this.heartbeatTimer = setInterval(() => this.beat(), this.o.heartbeatMs)
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(1000, Math.max(50, this.o.heartbeatMs / 2)))
    this.beat()
  }

  /** Graceful: mark this node left in the catalog and tell peers, before the libp2p node stops. */
  async stop(): Promise<void> {
    clearInterval(this.heartbeatTimer)
    clearInterval(this.sweepTimer)
    this.heartbeatTimer = this.sweepTimer = undefined
    this.events?.close()
    this.events = undefined
    await Promise.all(this.writing)
    try {
      await this.d.catalog.markSelfLeft()
    } catch (err) {
      this.d.log.warn({ err }, 'could not mark this node as left')
    }
    await this.publish('left')
    this.d.pubsub?.removeEventListener('gossipsub:message', this.onMessage)
    this.d.pubsub?.topicValidators.delete(HEARTBEAT_TOPIC)
  }

  isUp(name: string): boolean {
    if (name === this.nodeName) return true
    return this.tracked.get(name)?.state === 'up'
  }

  peerIdOf(name: string): string | undefined {
    return this.tracked.get(name)?.peerId ?? this.d.catalog.getNode(name)?.peerId
  }

  /** Live view of load from heartbeats (fresher than the record's, which is refreshed every few minutes). */
  loadOf(name: string): NodeLoad | undefined {
    return name === this.nodeName ? this.d.load() : this.tracked.get(name)?.load
  }

  nodes(): NodeLiveness[] {
    const out: NodeLiveness[] = [{
      name: this.nodeName, region: this.d.self.region, state: 'self', peerId: this.d.peerId, lastHeartbeatAt: Date.now(), load: this.d.load(),
    }]
    for (const [name, t] of this.tracked) {
      out.push({ name, region: t.region, state: t.state, peerId: t.peerId, lastHeartbeatAt: t.lastHeartbeatAt, load: t.load })
    }
    for (const name of this.left) {
      const rec = this.d.catalog.getNode(name)
      out.push({ name, region: rec?.region, state: 'left', peerId: rec?.peerId, lastHeartbeatAt: rec?.lastSeen, load: undefined })
    }
    return out.sort((a, b) => a.name.localeCompare(b.name))
  }

  private selfRecord() {
    const s = this.d.self
    return {
      name: this.nodeName,
      region: s.region,
      roles: s.roles,
      ...(s.admin === undefined ? {} : { admin: s.admin }),
      gossip: this.d.multiaddrs(),
      peerId: this.d.peerId,
      ...(s.backhaul === undefined ? {} : { backhaul: s.backhaul }),
      ...(s.publicAddr === undefined ? {} : { publicAddr: s.publicAddr }),
      startedAt: this.startedAt,
      load: this.d.load(),
      version: s.version,
    }
  }

  /** The self description changed (e.g. the admin address became known): write the record now. */
  async refreshSelf(): Promise<void> {
    await this.writeSelf()
  }

  /** The catalog writes only when the record changed or lastSeen is ~5 minutes old, so calling often is cheap. */
  private async writeSelf(): Promise<void> {
    await this.d.catalog.upsertSelf(this.selfRecord())
  }

  private beat(): void {
    this.writeSelf().catch((err: unknown) => this.d.log.warn({ err }, 'refreshing this node\'s record failed'))
    void this.publish('active')
  }

  private async publish(status: Heartbeat['status']): Promise<void> {
    const pubsub = this.d.pubsub
    if (pubsub === undefined) return
    const hb: Heartbeat = {
      v: 1, node: this.nodeName, region: this.d.self.region, peerId: this.d.peerId,
      addrs: this.d.multiaddrs().slice(0, GOSSIP_LIMITS.addrsPerNode), load: this.d.load(), status,
      startedAt: this.startedAt, sentAt: Date.now(),
    }
    const digestHash = this.d.digests?.current()
    if (digestHash !== undefined) hb.digestHash = digestHash
    const reach = this.d.reach?.encode(HEARTBEAT_TOPIC)
    let data = encodeWire(reach === undefined ? hb : { ...hb, reach })
    // many long addresses and many peers could overflow the limit receivers enforce: the reach list gives way
    if (data.byteLength > GOSSIP_LIMITS.heartbeatBytes) data = encodeWire(hb)
    try {
      await pubsub.publish(HEARTBEAT_TOPIC, data)
      this.d.counters.heartbeatsSent++
    } catch (err) {
      this.d.log.debug({ err }, 'publishing a heartbeat failed')
    }
  }

  private sweep(): void {
    const now = performance.now()
    for (const [name, t] of this.tracked) {
      if (t.state === 'up' && now - t.heardAt > this.o.downAfterMs) {
        if (this.d.catalog.getNode(name) === undefined) {
          // only heard of, never recorded in the catalog: a heartbeat with a made-up name (a flood of them
          // must not grow memory and the event log for ever); a real node's record arrives long before this
          this.tracked.delete(name)
          continue
        }
        t.state = 'down'
        const lastSeen = t.lastHeartbeatAt ?? this.d.catalog.getNode(name)?.lastSeen ?? 0
        this.d.log.info({ node: name, silentMs: Math.round(now - t.heardAt) }, 'node is down: no heartbeat')
        this.emit({ type: 'node.down', node: name, lastSeen })
      }
    }
  }

  private emit(event: { type: 'node.down'; node: string; lastSeen: number } | { type: 'node.up'; node: string }): void {
    // not chained one after another: the catalog writes ops of one priority in the order they were submitted, so
    // a node's down and up still reach the log in the order they were decided, and the peers one sweep finds
    // silent (a partition) go to disk in one group commit instead of one fsync each in a row
    const written = this.d.catalog.appendDerived(event).then(() => undefined, (err: unknown) => {
      this.d.log.warn({ err, event: event.type, node: event.node }, 'could not record a derived membership event')
    })
    this.writing.add(written)
    void written.finally(() => this.writing.delete(written))
  }

  private markLeft(name: string): void {
    const peerId = this.tracked.get(name)?.peerId ?? this.d.catalog.getNode(name)?.peerId
    if (this.tracked.delete(name)) this.d.log.info({ node: name }, 'node left the fleet')
    this.left.add(name)
    if (peerId !== undefined) this.d.onPeerGone(name, peerId)
  }

  private learnRecord(n: NodeRecord, initial: 'up' | 'down'): void {
    if (n.name === this.nodeName) return
    if (n.status === 'left') {
      this.markLeft(n.name)
      return
    }
    this.left.delete(n.name)
    let t = this.tracked.get(n.name)
    if (t === undefined) {
      // a node just learned of gets the full timeout to be heard before it is called down
      t = { state: initial, heardAt: performance.now(), lastHeartbeatAt: undefined, peerId: undefined, region: undefined, load: undefined }
      this.tracked.set(n.name, t)
    }
    t.region = n.region
    if (n.peerId !== undefined) {
      t.peerId ??= n.peerId
      this.d.onPeerLearned(n.name, n.peerId, n.gossip)
    }
  }

  private onCatalogEvent(e: CatalogEvent): void {
    if (e.type === 'node.joined' || e.type === 'node.updated') this.learnRecord(e.node, 'up')
    else if (e.type === 'node.left' && e.node !== this.nodeName) this.markLeft(e.node)
  }

  private readonly validate = (peer: PeerId, msg: Message): TopicValidatorResult => {
    if (!this.throttle.take(peer.toString())) {
      this.d.counters.droppedHeartbeats.throttled++
      return TopicValidatorResult.Ignore
    }
    const r = decodeWire(HeartbeatSchema, msg.data, GOSSIP_LIMITS.heartbeatBytes)
    if (!r.ok) {
      this.d.counters.droppedHeartbeats[r.reason]++
      this.d.log.debug({ peer: peer.toString(), reason: r.reason, detail: r.detail }, 'heartbeat rejected')
      return TopicValidatorResult.Reject
    }
    if (r.value.node === this.nodeName && r.value.peerId !== this.d.peerId) {
      this.d.counters.droppedHeartbeats.impostor++
      if (Date.now() - this.lastImpostorLog > 60_000) {
        this.lastImpostorLog = Date.now()
        this.d.log.error({ peerId: r.value.peerId }, `another node also calls itself "${this.nodeName}"; give every node a unique --name`)
      }
      return TopicValidatorResult.Ignore
    }
    this.parsed.set(msg.data, r.value)
    return TopicValidatorResult.Accept
  }

  private readonly onMessage = (evt: CustomEvent<GossipsubMessage>): void => {
    const { msg, msgId, propagationSource } = evt.detail
    if (msg.topic !== HEARTBEAT_TOPIC) return
    const hb = this.parsed.get(msg.data)
    if (hb === undefined) return // not validated by us (cannot happen with our validator installed)
    this.parsed.delete(msg.data)
    const source = propagationSource.toString()
    // nothing slow to check: forward at once (when it helps), liveness is only useful fresh
    const forward = this.d.reach?.forward(HEARTBEAT_TOPIC, msgId, source, hb.reach) ?? true
    if (!forward) this.d.counters.heartbeatsNotForwarded++
    this.d.pubsub?.reportMessageValidationResult(msgId, source, forward ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore)
    this.d.counters.heartbeatsReceived++
    this.heard(hb)
  }

  private heard(hb: Heartbeat): void {
    if (hb.status === 'left') {
      this.d.digests?.forget(hb.peerId)
      this.markLeft(hb.node)
      return
    }
    this.left.delete(hb.node)
    let t = this.tracked.get(hb.node)
    if (t === undefined) {
      t = { state: 'up', heardAt: 0, lastHeartbeatAt: undefined, peerId: undefined, region: undefined, load: undefined }
      this.tracked.set(hb.node, t)
    } else if (t.state === 'down') {
      t.state = 'up'
      this.d.log.info({ node: hb.node }, 'node is up again')
      this.emit({ type: 'node.up', node: hb.node })
    }
    t.heardAt = performance.now()
    t.lastHeartbeatAt = Date.now()
    t.peerId = hb.peerId
    t.region = hb.region
    t.load = hb.load
    this.d.digests?.heard(hb.peerId, hb.digestHash)
    this.d.onPeerLearned(hb.node, hb.peerId, hb.addrs)
  }
}
