import { peerIdFromString } from '@libp2p/peer-id'

/**
 * Who a flood-published message already reached, so that receivers forward only to peers that lack it.
 *
 * gossipsub flood-publishes to every subscribed peer, then every receiver forwards to its mesh (D peers). In a
 * fleet where each node is connected to every other, that forwarding is pure duplication: each message costs
 * every node ~D extra Noise-encrypted frames in and out, and on the benchmark's 20 nodes that transport work
 * was most of an idle node's CPU (docs/benchmarks.md). So the publisher lists, in the message, the peers it
 * sent to (`reach`), and a receiver leaves those peers (and the publisher) out when it forwards: a message is
 * forwarded, first-hand or second-hand, only to mesh peers its publisher did not send it to, and not at all
 * when every subscribed peer of this node is on the list. Partial connectivity still works as in plain
 * gossipsub (a link cut between two nodes that both reach a third: the third passes it on), but while a healed
 * partition reconnects, nodes no longer send each other copies of what they already have (about 900 of 970
 * heartbeats in a 20-node heal went to whole meshes when second-hand copies were always forwarded).
 *
 * The list holds 8-byte fingerprints (the tail of the peer id's multihash — for Ed25519 ids, of the public
 * key) rather than peer ids: 8 bytes per peer instead of ~52. Entry 0 is the publisher itself.
 */
export const FINGERPRINT_BYTES = 8
/** Above this many subscribers the list is left out and receivers forward as plain gossipsub does. */
export const MAX_REACH_PEERS = 255
const FINGERPRINT_CACHE = 4096

export interface ReachPubSub {
  getSubscribers(topic: string): Array<{ toString(): string }>
  getMeshPeers(topic: string): string[]
}

/** Makes gossipsub leave `peer` out when it forwards message `msgId` (gossip/libp2p-node.ts `forwardSparer`). */
export type SpareFromForward = (msgId: string, peer: string) => void

export class Reach {
  private readonly fingerprints = new Map<string, bigint>()
  private readonly self: bigint

  /** Without `spare`, a message some subscribed peer lacks still goes to the whole mesh. */
  constructor(private readonly pubsub: ReachPubSub, selfPeerId: string, private readonly spare?: SpareFromForward) {
    this.self = this.fingerprint(selfPeerId)
  }

  /** The `reach` field for a message about to be published on `topic`; undefined when too many peers. */
  encode(topic: string): Uint8Array | undefined {
    const peers = this.pubsub.getSubscribers(topic)
    if (peers.length > MAX_REACH_PEERS) return undefined
    const out = new Uint8Array((peers.length + 1) * FINGERPRINT_BYTES)
    const view = new DataView(out.buffer)
    view.setBigUint64(0, this.self)
    for (let i = 0; i < peers.length; i++) view.setBigUint64((i + 1) * FINGERPRINT_BYTES, this.fingerprint(peers[i].toString()))
    return out
  }

  /**
   * Called before message `msgId` on `topic`, received from `source`, is accepted: whether any subscribed peer
   * still lacks it (else it is not worth forwarding at all). The mesh peers its reach list covers are left out
   * of the forward. Without a usable list: forward as gossipsub does.
   */
  forward(topic: string, msgId: string, source: string, reach: Uint8Array | undefined): boolean {
    if (reach === undefined || reach.byteLength < FINGERPRINT_BYTES || reach.byteLength % FINGERPRINT_BYTES !== 0) return true
    const view = new DataView(reach.buffer, reach.byteOffset, reach.byteLength)
    if (!this.someoneLacks(topic, source, view)) return false
    if (this.spare !== undefined) {
      for (const peer of this.pubsub.getMeshPeers(topic)) if (peer !== source && contains(view, this.fingerprint(peer))) this.spare(msgId, peer)
    }
    return true
  }

  private someoneLacks(topic: string, source: string, view: DataView): boolean {
    for (const peer of this.pubsub.getSubscribers(topic)) {
      const id = peer.toString()
      if (id !== source && !contains(view, this.fingerprint(id))) return true
    }
    return false
  }

  private fingerprint(peerId: string): bigint {
    let fp = this.fingerprints.get(peerId)
    if (fp === undefined) {
      if (this.fingerprints.size >= FINGERPRINT_CACHE) this.fingerprints.clear() // churn must not grow it
      fp = fingerprintOf(peerId)
      this.fingerprints.set(peerId, fp)
    }
    return fp
  }
}

export function fingerprintOf(peerId: string): bigint {
  const bytes = peerIdFromString(peerId).toMultihash().bytes
  return new DataView(bytes.buffer, bytes.byteOffset + bytes.byteLength - FINGERPRINT_BYTES, FINGERPRINT_BYTES).getBigUint64(0)
}

/** Whether the list names `fp`, as publisher (entry 0) or as a peer it sent to. */
function contains(view: DataView, fp: bigint): boolean {
  for (let off = 0; off < view.byteLength; off += FINGERPRINT_BYTES) if (view.getBigUint64(off) === fp) return true
  return false
}
