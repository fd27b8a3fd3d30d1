import { peerIdFromString } from '@libp2p/peer-id'

/**
 * Who a flood-published message already reached, so that receivers forward only when it helps.
 *
 * gossipsub flood-publishes to every subscribed peer, then every receiver forwards to its mesh (D peers). In a
 * fleet where each node is connected to every other, that forwarding is pure duplication: each message costs
 * every node ~D extra Noise-encrypted frames in and out, and on the benchmark's 20 nodes that transport work
 * was most of an idle node's CPU (docs/benchmarks.md). So the publisher lists, in the message, the peers it
 * sent to (`reach`); a node that received the message straight from its publisher forwards it only if one of
 * its own subscribed peers is missing from that list. Messages that arrive second-hand are always forwarded,
 * so partial connectivity (a link cut between two nodes that both reach a third) behaves as plain gossipsub.
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
}

export class Reach {
  private readonly fingerprints = new Map<string, bigint>()
  private readonly self: bigint

  constructor(private readonly pubsub: ReachPubSub, selfPeerId: string) {
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
   * Whether a message on `topic` that came from `source` should be forwarded: always unless it came straight
   * from its publisher with a reach list covering every peer this node would forward to.
   */
  shouldForward(topic: string, source: string, reach: Uint8Array | undefined): boolean {
    if (reach === undefined || reach.byteLength < FINGERPRINT_BYTES || reach.byteLength % FINGERPRINT_BYTES !== 0) return true
    const view = new DataView(reach.buffer, reach.byteOffset, reach.byteLength)
    const publisher = view.getBigUint64(0)
    if (publisher !== this.fingerprint(source)) return true
    for (const peer of this.pubsub.getSubscribers(topic)) {
      const id = peer.toString()
      if (id === source) continue
      if (!contains(view, this.fingerprint(id))) return true
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

function contains(view: DataView, fp: bigint): boolean {
  for (let off = FINGERPRINT_BYTES; off < view.byteLength; off += FINGERPRINT_BYTES) if (view.getBigUint64(off) === fp) return true
  return false
}
