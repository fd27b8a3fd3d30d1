import { GOSSIP_LIMITS } from '../schemas/gossip-messages.js'
import type { AntiEntropyOptions } from './anti-entropy.js'
import type { BroadcastOptions } from './broadcast.js'
import type { ClosenessOptions } from './closeness.js'
import type { Libp2pNodeInit } from './libp2p-node.js'
import type { MembershipOptions, SelfDescription } from './membership.js'
import type { PeerDialerOptions } from './peer-dialer.js'

/** What the daemon passes to `gossipNode()`; everything but the addresses, data dir and self has a default. */
export interface GossipNodeInit {
  /** `--gossip-listen`: libp2p multiaddrs, e.g. `/ip4/0.0.0.0/tcp/4001`. */
  listen: string[]
  /** Addresses to tell peers instead of the listen addresses (NAT, port mapping, a test relay). */
  announce?: string[]
  /** `--bootstrap`: multiaddrs of nodes to join through; `/p2p/<peer id>` is optional. */
  bootstrap: string[]
  /** The fleet key file's bytes (`--fleet-key`, `--fleet`). Without it the node runs alone. */
  fleetKey?: Uint8Array
  /** The peer key lives in `<dataDir>/gossip/peer.key`. */
  dataDir: string
  self: SelfDescription
  /** Heartbeat period (default 2 s) and silence after which a node is down (default 10 s). */
  heartbeatMs?: number
  downAfterMs?: number
  /** Anti-entropy period (default 5 s) and the random peers synced each period (default 3). */
  syncIntervalMs?: number
  syncFanout?: number
  /** Local changes made within this many ms go out as one message per document (default 5). */
  coalesceMs?: number
  /** RTT measurement period (default 5 s). */
  pingIntervalMs?: number
  /** Learned nodes are dialled while fewer peers than this are connected (default 32). */
  maxPeers?: number
  /** Longest wait between two dials of an unreachable peer (default 500 ms): bounds how fast a healed partition reconnects. */
  redialMaxMs?: number
  /** Redials of unreachable peers per second, all of them together (default 2): bounds what a partition costs. */
  redialsPerSecond?: number
  /**
   * Redials per second of the whole fleet while its nodes are cut off and no peer has come back yet (default 10):
   * each node takes its share by the fleet's size, at most `redialsPerSecond`.
   */
  fleetProbesPerSecond?: number
  /** Local address for outgoing connections (multi-homed hosts; a distinct 127.x per node in tests). */
  dialFrom?: string
  /** gossipsub's IP-colocation penalty (≤ 0, default -5). Keep it in production; 0 when all peers share an IP. */
  ipColocationFactorWeight?: number
  /** `none` (default): messages are not signed inside the private network (see docs/gossip.md). */
  messageSigning?: 'none' | 'sign'
  tuning?: Partial<GossipTuning>
}

/** Limits and timeouts; the defaults suit fleets of tens of nodes. */
export interface GossipTuning {
  /** Per forwarding peer: changes messages per second, sustained and burst. */
  changesPerPeerPerSecond: number
  changesPerPeerBurst: number
  heartbeatsPerPeerPerSecond: number
  heartbeatsPerPeerBurst: number
  /** Per peer: inbound sync sessions per second, sustained and burst. */
  syncPerPeerPerSecond: number
  syncPerPeerBurst: number
  syncSessionTimeoutMs: number
  syncFrameTimeoutMs: number
  maxSyncFrameBytes: number
  maxChangesMessageBytes: number
  syncDocsPerRound: number
  pingTimeoutMs: number
  /** A connection whose pings have all failed this long is closed and redialled. */
  deadConnectionMs: number
  dialTimeoutMs: number
  /**
   * gossipsub mesh degree. Every message a node forwards costs one Noise-encrypted Yamux frame per mesh
   * peer, and that transport work dominates an idle fleet's CPU (docs/benchmarks.md); anti-entropy repairs
   * what a thinner mesh misses.
   */
  meshDegree: number
  /** A sync session that brought more than this many bytes of changes does not broadcast them on (gossip/sync-relay.ts). */
  syncRelayMaxBytes: number
}

export const DEFAULT_TUNING: GossipTuning = {
  changesPerPeerPerSecond: 500,
  changesPerPeerBurst: 2000,
  heartbeatsPerPeerPerSecond: 100,
  heartbeatsPerPeerBurst: 400,
  syncPerPeerPerSecond: 2,
  syncPerPeerBurst: 10,
  syncSessionTimeoutMs: 30_000,
  syncFrameTimeoutMs: 10_000,
  maxSyncFrameBytes: GOSSIP_LIMITS.syncFrameBytes,
  maxChangesMessageBytes: GOSSIP_LIMITS.changesMessageBytes,
  syncDocsPerRound: 64,
  pingTimeoutMs: 2_000,
  deadConnectionMs: 10_000,
  dialTimeoutMs: 5_000,
  meshDegree: 6,
  syncRelayMaxBytes: 256 * 1024,
}

export interface PartOptions {
  libp2p: Omit<Libp2pNodeInit, 'privateKey' | 'fleetKey' | 'handshakes' | 'topics'>
  antiEntropy: AntiEntropyOptions
  broadcast: BroadcastOptions
  dialer: PeerDialerOptions
  membership: MembershipOptions
  closeness: ClosenessOptions
  relayMaxBytes: number
}

/** Every part's options from the one init, defaults applied in this one place. */
export function partOptions(init: GossipNodeInit): PartOptions {
  const t = { ...DEFAULT_TUNING, ...init.tuning }
  const maxPeers = init.maxPeers ?? 32
  return {
    libp2p: {
      listen: init.listen,
      announce: init.announce,
      dialFrom: init.dialFrom,
      ipColocationFactorWeight: init.ipColocationFactorWeight ?? -5,
      signing: init.messageSigning ?? 'none',
      // the fleet is trusted: take peer exchange from any peer not penalised
      acceptPXThreshold: 0,
      maxConnections: Math.max(64, maxPeers * 2),
      dialTimeoutMs: t.dialTimeoutMs,
      maxRpcBytes: Math.max(4 * 1024 * 1024, t.maxChangesMessageBytes * 4),
      // Dhi: D + 2, not 2D: peers graft until a mesh is full, and forwarding (when it happens) costs per mesh
      // peer. Dlazy 2 with no gossip factor: IHAVE gossip repeats what flood publishing already delivered
      // to every connected peer; forwarding around gaps and anti-entropy cover what it would (gossip/reach.ts)
      mesh: { D: t.meshDegree, Dlo: Math.max(1, t.meshDegree - 1), Dhi: t.meshDegree + 2, Dlazy: Math.min(2, t.meshDegree), gossipFactor: 0 },
      version: init.self.version,
    },
    antiEntropy: {
      intervalMs: init.syncIntervalMs ?? 5_000,
      fanout: init.syncFanout ?? 3,
      sessionTimeoutMs: t.syncSessionTimeoutMs,
      frameTimeoutMs: t.syncFrameTimeoutMs,
      maxFrameBytes: t.maxSyncFrameBytes,
      docsPerRound: t.syncDocsPerRound,
      maxRoundsPerDoc: 16,
      inboundPerSecond: t.syncPerPeerPerSecond,
      inboundBurst: t.syncPerPeerBurst,
    },
    broadcast: {
      coalesceMs: init.coalesceMs ?? 5,
      maxMessageBytes: t.maxChangesMessageBytes,
      perPeerPerSecond: t.changesPerPeerPerSecond,
      perPeerBurst: t.changesPerPeerBurst,
    },
    // the tick only compares times (a dial waits for its backoff): 100 ms puts a healed link's redial within
    // 100 ms of its time instead of 250
    dialer: { tickMs: 100, minBackoffMs: 250, maxBackoffMs: init.redialMaxMs ?? 500, maxPeers, dialTimeoutMs: t.dialTimeoutMs, answerWaitMs: 3_000, redialsPerSecond: init.redialsPerSecond ?? 2, fleetProbesPerSecond: init.fleetProbesPerSecond ?? 10 },
    membership: {
      heartbeatMs: init.heartbeatMs ?? 2_000,
      downAfterMs: init.downAfterMs ?? 10_000,
      perPeerPerSecond: t.heartbeatsPerPeerPerSecond,
      perPeerBurst: t.heartbeatsPerPeerBurst,
    },
    closeness: { pingIntervalMs: init.pingIntervalMs ?? 5_000, pingTimeoutMs: t.pingTimeoutMs, deadAfterMs: t.deadConnectionMs, rttWindow: 6 },
    relayMaxBytes: t.syncRelayMaxBytes,
  }
}
