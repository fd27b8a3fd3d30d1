import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub, type GossipSub, type GossipSubComponents, StrictNoSign, StrictSign, type TopicValidatorResult } from '@libp2p/gossipsub'
import type { TopicScoreParams } from '@libp2p/gossipsub/score'
import { identify, type Identify } from '@libp2p/identify'
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { ping, type Ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp, type TCPSocketOptions } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { HandshakeWatch } from './handshake-watch.js'
import { fastX25519Crypto } from './noise-crypto.js'
import type { SpareFromForward } from './reach.js'
import { sendYamuxWindowUpdatesAtHalf } from './yamux-window-updates.js'

/**
 * The libp2p node of a daemon (DESIGN §3): TCP, the fleet key as private network, Noise, Yamux, identify,
 * ping and gossipsub, tuned for a small trusted fleet. Peers are dialled by gossip/peer-dialer.ts rather
 * than @libp2p/bootstrap, which needs a peer id in every address and dials only once.
 */
export type GossipServices = { identify: Identify; ping: Ping; pubsub: GossipPubSub }
export type GossipLibp2p = Libp2p<GossipServices>

/**
 * The peer ids of every open connection, each once. libp2p's getPeers() collects them in a PeerSet, which turns
 * each peer id into a string and back (a base58 decode per peer: ~0.2 ms for 19 peers, against ~0.003 ms here),
 * and the dialer alone asks ten times a second.
 */
export function connectedPeerIds(libp2p: Pick<Libp2p, 'getConnections'>): Set<string> {
  const ids = new Set<string>()
  for (const c of libp2p.getConnections()) ids.add(c.remotePeer.toString())
  return ids
}

/**
 * Methods the gossipsub implementation has (dist/src/gossipsub.d.ts) but its exported interface omits:
 * async validation needs the first, stats and tests the others.
 */
export interface GossipPubSub extends GossipSub {
  reportMessageValidationResult(msgId: string, propagationSource: string, acceptance: TopicValidatorResult): void
  getMeshPeers(topic: string): string[]
  getScore(peerId: string): number
  /** `ignoreDuplicatePublishError`: a message this node already saw is not published again, and that is no error. */
  publish(topic: string, data?: Uint8Array, opts?: { ignoreDuplicatePublishError?: boolean }): Promise<{ recipients: PeerId[] }>
}

/**
 * gossipsub leaves out of a forward every peer its message cache saw send that message (the entry's originating
 * peers, recorded until the message is validated); marking a peer there is how a node spares the peers a
 * publisher already reached (gossip/reach.ts). The cache is not part of gossipsub's typed interface: undefined
 * if this version has none, and forwarding is then gossipsub's own.
 */
export function forwardSparer(pubsub: GossipPubSub): SpareFromForward | undefined {
  const mcache = (pubsub as unknown as { mcache?: { observeDuplicate?: unknown } }).mcache
  if (mcache === undefined || typeof mcache.observeDuplicate !== 'function') return undefined
  const observeDuplicate = mcache.observeDuplicate as (msgId: string, peer: string) => void
  return (msgId, peer) => observeDuplicate.call(mcache, msgId, peer)
}

export interface Libp2pNodeInit {
  privateKey: PrivateKey
  /** The pre-shared key file's bytes (gossip/fleet-key.ts). */
  fleetKey: Uint8Array
  listen: string[]
  /** Addresses peers should dial instead of the listen addresses (NAT, a relay in tests). */
  announce?: string[]
  /** Local address outgoing connections are made from (multi-homed hosts; one 127.x per node in tests). */
  dialFrom?: string
  topics: string[]
  /** gossipsub P6 weight: ≤ 0; 0 on loopback, where every peer shares one IP (PERF-NOTES). */
  ipColocationFactorWeight: number
  /** `none` (StrictNoSign, the default) or `sign` (StrictSign); every node of a fleet must agree. */
  signing: 'none' | 'sign'
  /** Peer exchange is accepted from peers scoring at least this (default 0: every well-behaved peer). */
  acceptPXThreshold: number
  maxConnections: number
  dialTimeoutMs: number
  /** Bytes of one gossipsub RPC (several messages plus control). */
  maxRpcBytes: number
  /** gossipsub mesh degree (D, Dlo, Dhi) and lazy gossip degree (Dlazy). */
  mesh?: { D: number; Dlo: number; Dhi: number; Dlazy: number; gossipFactor: number }
  handshakes: HandshakeWatch
  version: string
}

/**
 * Score only what matters in a quiet fleet: invalid messages (P4) push a peer below the gossip and then the
 * graylist thresholds; mesh-delivery penalties (P3) are off, since a fleet may publish nothing for minutes.
 */
const TOPIC_SCORE: Partial<TopicScoreParams> = {
  topicWeight: 1,
  timeInMeshWeight: 0.01,
  timeInMeshQuantum: 1000,
  timeInMeshCap: 300,
  firstMessageDeliveriesWeight: 0.5,
  firstMessageDeliveriesDecay: 0.9,
  firstMessageDeliveriesCap: 20,
  meshMessageDeliveriesWeight: 0,
  meshFailurePenaltyWeight: 0,
  invalidMessageDeliveriesWeight: -10,
  // decays per second: one bad message is forgiven in a minute or so, a stream of them graylists the peer
  invalidMessageDeliveriesDecay: 0.95,
}

/** How long an inbound ping stream may live; the peer's pinger reopens it (gossip/ping-line.ts). */
const PING_STREAM_LIFETIME_MS = 10 * 60_000

export async function createGossipLibp2p(init: Libp2pNodeInit): Promise<GossipLibp2p> {
  sendYamuxWindowUpdatesAtHalf()
  const dialOpts = { noDelay: true, ...(init.dialFrom === undefined ? {} : { localAddress: init.dialFrom }) }
  return await createLibp2p<GossipServices>({
    start: false,
    privateKey: init.privateKey,
    nodeInfo: { name: 'edgeproxy', version: init.version },
    addresses: { listen: init.listen, ...(init.announce === undefined ? {} : { announce: init.announce }) },
    // `localAddress` is passed through to net.connect; the type only lists the common options
    transports: [tcp({ dialOpts: dialOpts as TCPSocketOptions })],
    connectionProtector: () => init.handshakes.protector(preSharedKey({ psk: init.fleetKey })()),
    connectionEncrypters: [noise({ crypto: fastX25519Crypto })],
    streamMuxers: [yamux()],
    connectionManager: {
      maxConnections: init.maxConnections,
      dialTimeout: init.dialTimeoutMs,
      // a fleet restarting behind one NAT, or a loopback test, opens many connections from one IP at once
      inboundConnectionThreshold: 100,
      maxIncomingPendingConnections: 64,
    },
    // libp2p's connection monitor opens a new ping stream on every connection every 10 s to find dead ones;
    // our closeness pinger already pings every peer on one long-lived stream and aborts a connection whose
    // pings fail (gossip/closeness.ts), so the monitor would only double the work
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      // the closeness pinger keeps one ping stream per peer open; the service ends an inbound one after
      // `timeout`, and the pinger then opens the next
      ping: ping({ maxOutboundStreams: 2, maxInboundStreams: 4, timeout: PING_STREAM_LIFETIME_MS }),
      pubsub: gossipsub({
        globalSignaturePolicy: init.signing === 'sign' ? StrictSign : StrictNoSign,
        allowedTopics: init.topics,
        fallbackToFloodsub: false,
        // each receiver applies the changes before forwarding, so a bad message stops at the first hop
        asyncValidation: true,
        emitSelf: false,
        // no peer exchange on PRUNE: every node already learns every other from heartbeats and node records
        // (gossip/peer-dialer.ts), and PX made gossipsub dial too, racing our dialer into duplicate connections
        doPX: false,
        // publish() with nobody listening is normal (first node, partition); we count it and rely on sync
        allowPublishToZeroTopicPeers: true,
        ignoreDuplicatePublishError: true,
        maxInboundDataLength: init.maxRpcBytes,
        // IDONTWANT goes to every mesh peer on each receipt of a message this big; with forwarding mostly
        // skipped (gossip/reach.ts) it would be most of the traffic, and routine changes are ~1 KiB
        idontwantMinDataSize: 16 * 1024,
        ...(init.mesh === undefined ? {} : { D: init.mesh.D, Dlo: init.mesh.Dlo, Dhi: init.mesh.Dhi, Dlazy: init.mesh.Dlazy, gossipFactor: init.mesh.gossipFactor }),
        scoreParams: {
          IPColocationFactorWeight: init.ipColocationFactorWeight,
          topics: Object.fromEntries(init.topics.map((t) => [t, TOPIC_SCORE as TopicScoreParams])),
        },
        scoreThresholds: { acceptPXThreshold: init.acceptPXThreshold },
      }) as (components: GossipSubComponents) => GossipPubSub,
    },
  })
}
