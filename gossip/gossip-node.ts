import type { PrivateKey } from '@libp2p/interface'
import type { Subscription } from '../catalog/catalog-api.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import { EdgeProxyError } from '../schemas/errors.js'
import { AntiEntropy } from './anti-entropy.js'
import { Broadcast, type BroadcastReplica, CHANGES_TOPIC } from './broadcast.js'
import { Closeness } from './closeness.js'
import { DigestWatch } from './digest-watch.js'
import { fleetKeyFingerprint } from './fleet-key.js'
import { type GossipNodeInit, type PartOptions, partOptions } from './gossip-options.js'
import { HandshakeWatch } from './handshake-watch.js'
import { connectedPeerIds, createGossipLibp2p, forwardSparer, type GossipLibp2p } from './libp2p-node.js'
import { HEARTBEAT_TOPIC, Membership, type MembershipCatalog, type NodeLiveness, type NodeLoad, type SelfDescription } from './membership.js'
import { loadOrCreatePeerKey } from './peer-key.js'
import { PeerDialer } from './peer-dialer.js'
import { Reach } from './reach.js'
import { type GossipStats, newCounters, snapshotCounters } from './stats.js'
import type { SyncReplica, SyncSessionResult } from './sync-protocol.js'
import { SyncRelay } from './sync-relay.js'

/** The catalog slices gossip uses: bytes in and out, its own node record, node records to read. */
export type GossipCatalog = SyncReplica & BroadcastReplica & MembershipCatalog

export interface GossipNodeComponents {
  catalog: GossipCatalog
  log: Logger
  /** This node's current load, sent in heartbeats (the proxy's connections, the supervisor's Machines). */
  load?: () => NodeLoad
}

export type { GossipNodeInit, GossipTuning } from './gossip-options.js'

export interface NodeStatus extends NodeLiveness {
  /** Smoothed RTT in ms (0 for self), when measured. */
  rttMs: number | undefined
}

export interface GossipCloseness {
  rttToNode(node: string): number | undefined
  regionsByRtt(): string[]
  rttByRegion(): Map<string, number>
}

export interface GossipNode {
  start(): Promise<void>
  stop(): Promise<void>
  /** This node's libp2p peer id (persisted in the data dir); known once start() resolved. */
  readonly peerId: string
  /** True when started without a fleet key: no listener, no peers. */
  readonly alone: boolean
  /** Addresses peers can dial, with `/p2p/<peer id>` (the announced ones, when announce is set). */
  multiaddrs(): string[]
  /** Addresses the listener is bound to (the real port when listening on port 0). */
  listenAddrs(): string[]
  readonly closeness: GossipCloseness
  stats(): GossipStats
  /** Whether routing may use `node`: self, or heard within `downAfterMs`. */
  isNodeUp(node: string): boolean
  /** Every known node with its liveness and RTT, for `edgeproxy catalog nodes`. */
  nodes(): NodeStatus[]
  connectedPeers(): string[]
  /** gossipsub's score of a peer (negative after invalid messages); undefined when alone. */
  peerScore(peerId: string): number | undefined
  /** Runs a sync session with every connected peer now and waits for them. */
  syncNow(): Promise<SyncSessionResult[]>
  /** Facts about this node learned after start (the admin API's bound address): written to the record now. */
  describeSelf(patch: Partial<SelfDescription>): Promise<void>
}

/**
 * @example
 * const gossip = gossipNode({ listen: ['/ip4/0.0.0.0/tcp/4001'], bootstrap, fleetKey, dataDir, self })({ catalog, log })
 * await gossip.start()
 * gossip.closeness.regionsByRtt() // ['ams', 'fra', 'iad']
 * await gossip.stop()            // marks the node left, then stops libp2p
 */
export function gossipNode(init: GossipNodeInit) {
  return (components: GossipNodeComponents): GossipNode => new DefaultGossipNode(init, components)
}

class DefaultGossipNode implements GossipNode {
  private readonly counters = newCounters()
  private readonly o: PartOptions
  private readonly log: Logger
  private libp2p: GossipLibp2p | undefined
  private membership: Membership | undefined
  private broadcast: Broadcast | undefined
  private antiEntropy: AntiEntropy | undefined
  private dialer: PeerDialer | undefined
  private closenessImpl: Closeness | undefined
  private reach: Reach | undefined
  private readonly digests: DigestWatch
  private digestEvents: Subscription | undefined
  private ownPeerId: string | undefined
  private started = false
  private lastHandshakeLog = new Map<string, number>()
  private bound: string[] = []

  constructor(private readonly init: GossipNodeInit, private readonly c: GossipNodeComponents) {
    this.o = partOptions(init)
    this.log = c.log
    this.digests = new DigestWatch(() => c.catalog.digestHash(), 2 * this.o.antiEntropy.intervalMs)
  }

  get peerId(): string {
    if (this.ownPeerId === undefined) throw new EdgeProxyError('EP_INTERNAL', 'gossip has not started; its peer id is not loaded yet')
    return this.ownPeerId
  }

  get alone(): boolean { return this.init.fleetKey === undefined }

  readonly closeness: GossipCloseness = {
    rttToNode: (node) => (node === this.c.catalog.nodeName ? 0 : this.closenessImpl?.rttToNode(node)),
    regionsByRtt: () => this.closenessImpl?.regionsByRtt() ?? [this.init.self.region],
    rttByRegion: () => this.closenessImpl?.rttByRegion() ?? new Map([[this.init.self.region, 0]]),
  }

  async start(): Promise<void> {
    if (this.started) return
    try {
      await this.startParts()
    } catch (err) {
      await this.teardown()
      throw err
    }
    this.started = true
  }

  private async startParts(): Promise<void> {
    const key = await loadOrCreatePeerKey(this.init.dataDir)
    this.ownPeerId = peerIdFromPrivateKey(key).toString()
    if (this.init.fleetKey !== undefined) await this.startNetwork(key, this.init.fleetKey)
    await this.startMembership()
    this.dialer?.start(this.init.bootstrap)
    if (this.libp2p === undefined) {
      this.log.warn({ peerId: this.ownPeerId }, 'no fleet key: gossip is off and this node runs alone; create a key with `edgeproxy fleet init --out DIR` and start every node with --fleet DIR')
    } else {
      this.log.info({
        peerId: this.ownPeerId, addrs: this.multiaddrs(), bootstrap: this.init.bootstrap,
        fleetKey: fleetKeyFingerprint(this.init.fleetKey!), signing: this.o.libp2p.signing,
      }, 'gossip started in the private fleet network')
    }
  }

  /** libp2p, anti-entropy, broadcast and the dialer: everything that needs the fleet key. */
  private async startNetwork(privateKey: PrivateKey, fleetKey: Uint8Array): Promise<void> {
    const handshakes = new HandshakeWatch((f) => this.onHandshakeFailure(f))
    const libp2p = this.libp2p = await createGossipLibp2p({ ...this.o.libp2p, privateKey, fleetKey, handshakes, topics: [CHANGES_TOPIC, HEARTBEAT_TOPIC] })
    libp2p.addEventListener('connection:open', (e) => handshakes.upgraded(e.detail.remoteAddr.toString()))
    libp2p.addEventListener('transport:listening', (e) => { this.bound.push(...e.detail.getAddrs().map(String)) })
    const sparer = forwardSparer(libp2p.services.pubsub)
    if (sparer === undefined) this.log.warn('this gossipsub version has no message cache to mark: forwards go to whole meshes, peers that already have a message included')
    const reach = this.reach = new Reach(libp2p.services.pubsub, this.peerId, sparer && ((msgId, peer) => {
      this.counters.forwardsSpared++
      sparer(msgId, peer)
    }))
    const digests = this.digests
    // every state this node passes through is remembered, so that a peer reporting it is known to be level
    this.digestEvents = this.c.catalog.subscribe({}, () => { digests.current() })
    const relay = new SyncRelay({
      relay: (docId, changes) => this.broadcast?.relay(docId, changes),
      peers: () => [...connectedPeerIds(libp2p)],
      digests,
      counters: this.counters,
    }, this.o.relayMaxBytes)
    const antiEntropy = this.antiEntropy = new AntiEntropy({
      libp2p, replica: this.c.catalog, log: this.log.child({ part: 'sync' }), counters: this.counters, digests, relay,
    }, this.o.antiEntropy)
    await antiEntropy.start() // the handler exists before the first peer can connect
    try {
      await libp2p.start()
    } catch (err) {
      throw new EdgeProxyError('EP_INVALID_CONFIG', `gossip cannot listen on ${this.init.listen.join(', ')}: ${(err as Error).message}; check --gossip-listen`, { cause: err })
    }
    const self = this.peerId
    libp2p.services.pubsub.addEventListener('subscription-change', (e) => {
      // A peer that just (re)subscribed missed what was published before: sync fills that gap. One session
      // levels both sides, so of the two only the smaller peer id starts it; should it not, the other's
      // interval round does, as a peer not heard since it reconnected may differ.
      const peer = e.detail.peerId.toString()
      if (self < peer && e.detail.subscriptions.some((s) => s.topic === CHANGES_TOPIC && s.subscribe)) antiEntropy.request(peer, 'peer subscribed')
    })
    // what a peer reported before it disconnected says nothing of what it holds when it comes back
    libp2p.addEventListener('peer:disconnect', (e) => { digests.forget(e.detail.toString()) })
    libp2p.addEventListener('peer:connect', (e) => { digests.connected(e.detail.toString()) })
    this.broadcast = new Broadcast({
      pubsub: libp2p.services.pubsub,
      replica: this.c.catalog,
      log: this.log.child({ part: 'broadcast' }),
      counters: this.counters,
      sync: antiEntropy,
      connectedPeers: () => connectedPeerIds(libp2p).size,
      reach,
    }, this.o.broadcast)
    this.broadcast.start()
    this.dialer = new PeerDialer(libp2p, this.log.child({ part: 'dialer' }), this.counters, this.o.dialer)
  }

  /** Membership and closeness, which run alone too (the node's own record, RTT 0 to itself). */
  private async startMembership(): Promise<void> {
    const dialer = this.dialer
    const membership = this.membership = new Membership({
      catalog: this.c.catalog,
      pubsub: this.libp2p?.services.pubsub,
      log: this.log.child({ part: 'membership' }),
      counters: this.counters,
      self: this.init.self,
      peerId: this.peerId,
      multiaddrs: () => this.multiaddrs(),
      load: this.c.load ?? (() => ({ machines: 0, connections: 0 })),
      onPeerLearned: (node, peerId, addrs) => dialer?.learn(node, peerId, addrs),
      onPeerGone: (_node, peerId) => dialer?.forget(peerId),
      ...(this.reach === undefined ? {} : { reach: this.reach, digests: this.digests }),
    }, this.o.membership)
    await membership.start()
    this.closenessImpl = new Closeness({
      libp2p: this.libp2p,
      nodeName: this.c.catalog.nodeName,
      region: this.init.self.region,
      peerIdOf: (node) => membership.peerIdOf(node),
      nodes: () => membership.nodes().filter((n) => n.state !== 'self').map((n) => ({ name: n.name, region: n.region, peerId: n.peerId, up: n.state === 'up' })),
      log: this.log.child({ part: 'closeness' }),
    }, this.o.closeness)
    this.closenessImpl.start()
  }

  async describeSelf(patch: Partial<SelfDescription>): Promise<void> {
    Object.assign(this.init.self, patch)
    await this.membership?.refreshSelf()
  }

  async stop(): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.teardown()
    this.log.info('gossip stopped')
  }

  /** Stops whatever start() got to, in reverse order. */
  private async teardown(): Promise<void> {
    this.dialer?.stop()
    this.closenessImpl?.stop()
    await this.membership?.stop() // marks this node left: the change and a last heartbeat go out first
    this.log.debug('stopping: membership done')
    await this.broadcast?.stop()
    this.log.debug('stopping: broadcast flushed')
    await this.antiEntropy?.stop()
    this.log.debug('stopping: sync sessions ended')
    await this.libp2p?.stop()
    this.digestEvents?.close()
    this.digestEvents = undefined
    this.dialer = this.closenessImpl = this.membership = this.broadcast = this.antiEntropy = this.libp2p = this.reach = undefined
    this.bound = []
  }

  multiaddrs(): string[] {
    return this.libp2p?.getMultiaddrs().map(String) ?? []
  }

  listenAddrs(): string[] {
    return [...this.bound]
  }

  stats(): GossipStats {
    const nodes = this.membership?.nodes().filter((n) => n.state !== 'self') ?? []
    return {
      ...snapshotCounters(this.counters),
      peers: this.libp2p === undefined ? 0 : connectedPeerIds(this.libp2p).size,
      connections: this.libp2p?.getConnections().length ?? 0,
      meshPeers: this.libp2p?.services.pubsub.getMeshPeers(CHANGES_TOPIC).length ?? 0,
      nodes: nodes.filter((n) => n.state !== 'left').length,
      nodesUp: nodes.filter((n) => n.state === 'up').length,
    }
  }

  isNodeUp(node: string): boolean {
    return this.membership?.isUp(node) ?? node === this.c.catalog.nodeName
  }

  nodes(): NodeStatus[] {
    return (this.membership?.nodes() ?? []).map((n) => ({ ...n, rttMs: this.closeness.rttToNode(n.name) }))
  }

  connectedPeers(): string[] {
    return this.libp2p === undefined ? [] : [...connectedPeerIds(this.libp2p)]
  }

  peerScore(peerId: string): number | undefined {
    return this.libp2p?.services.pubsub.getScore(peerId)
  }

  async syncNow(): Promise<SyncSessionResult[]> {
    const ae = this.antiEntropy
    if (ae === undefined) return []
    const results = await Promise.allSettled(this.connectedPeers().map((p) => ae.syncWith(p)))
    return results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  }

  private onHandshakeFailure(f: { remoteAddr: string; direction: string; error: Error | undefined }): void {
    this.counters.handshakeFailures++
    const host = f.remoteAddr.split('/tcp/')[0]
    const now = Date.now()
    if (now - (this.lastHandshakeLog.get(host) ?? 0) < 60_000) return
    if (this.lastHandshakeLog.size > 1000) this.lastHandshakeLog.clear() // a scan from many hosts: forget, do not grow
    this.lastHandshakeLog.set(host, now)
    this.log.warn(
      { remoteAddr: f.remoteAddr, direction: f.direction, err: f.error, fleetKey: fleetKeyFingerprint(this.init.fleetKey!) },
      'a peer failed the private-network handshake: it most likely uses a different fleet key (compare the fleetKey fingerprint both nodes log at start), or is not an edgeproxy node',
    )
  }
}
