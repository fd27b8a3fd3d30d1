import type { DocId } from '../schemas/catalog-records.js'
import { type DigestWatch, hexOf } from './digest-watch.js'
import type { GossipCounters } from './stats.js'

/**
 * Passes on what a sync session brings, as it arrives, when other peers may lack it.
 *
 * After a partition heals, the first session across the cut levels two nodes, one from each side; without this,
 * every other node had to wait for a session of its own with someone from the other side, while the whole fleet
 * was busy re-establishing the cut connections (on 20 nodes: seconds of CPU-bound waiting). Broadcasting what a
 * session brings reaches the rest of this node's side in one gossip hop over connections that never broke.
 *
 * Most sessions bring nothing others lack — a restarted node catching up from peers that all hold the same
 * state — so changes are relayed only when some other connected peer last reported a digest hash that is
 * neither the session partner's (it holds what the partner sent) nor this node's own; a peer that has not
 * reported one since it connected is left to its own on-connect session. A session that brings
 * more than `maxBytes` relays no more: broadcasting a whole catalog is not the cheaper way to spread it.
 */
export interface SyncRelayDeps {
  /** Publishes changes a session brought (gossip/broadcast.ts). */
  relay(docId: DocId, changes: Uint8Array[]): void
  /** Connected peer ids. */
  peers(): string[]
  digests: Pick<DigestWatch, 'reportedBy' | 'currentHex'>
  counters: GossipCounters
}

/** One session's side of the relay: told the partner's digest hash, then each document's new changes. */
export interface SessionRelay {
  hello(partnerHash: Uint8Array): void
  learned(docId: DocId, changes: Uint8Array[]): void
}

export class SyncRelay {
  constructor(private readonly d: SyncRelayDeps, private readonly maxBytes: number) {}

  session(partner: string): SessionRelay {
    let partnerHex: string | undefined
    let othersMayLack: boolean | undefined
    let bytes = 0
    return {
      hello: (hash) => { partnerHex = hexOf(hash) },
      learned: (docId, changes) => {
        if (bytes > this.maxBytes) return
        for (const c of changes) bytes += c.byteLength
        if (bytes > this.maxBytes) {
          this.d.counters.syncRelaysTooBig++
          return
        }
        othersMayLack ??= this.othersMayLack(partner, partnerHex)
        if (!othersMayLack) return
        this.d.relay(docId, changes)
        this.d.counters.syncDocsRelayed++
      },
    }
  }

  private othersMayLack(partner: string, partnerHex: string | undefined): boolean {
    const mine = this.d.digests.currentHex()
    for (const peer of this.d.peers()) {
      if (peer === partner) continue
      const theirs = this.d.digests.reportedBy(peer)
      // a peer not heard from since it connected runs its own session on connect
      if (theirs !== undefined && theirs !== partnerHex && theirs !== mine) return true
    }
    return false
  }
}
