/**
 * Which peers the periodic anti-entropy round should visit. Every heartbeat carries its sender's digest hash
 * (catalog/digest-hash.ts); a peer whose last reported hash is one this node itself held within `windowMs`
 * has nothing this node lacks, so it is skipped — an idle fleet runs no sync sessions at all, and a busy one
 * only with peers that really differ.
 *
 * Comparing with this node's *recent* hashes, not just its current one, is what keeps a busy fleet quiet: at
 * five deploys a second some change is nearly always in flight, so two nodes' current hashes rarely match at
 * the instant a heartbeat is compared, and syncing on every such mismatch made the sessions (full digests,
 * Automerge sync messages) cost more than the broadcasts they double-checked. A peer that missed a change
 * never reports a hash this node had, whichever side is behind: the behind side sees a hash it never held,
 * and the ahead side stops finding the peer's stale hash once it leaves the window.
 */
export class DigestWatch {
  /** Hex of this node's hashes → performance.now() when last held; oldest first. */
  private readonly mine = new Map<string, number>()
  /** Peer id → hex of the hash its last heartbeat reported. */
  private readonly reported = new Map<string, string>()
  /** The same, kept across disconnects (`forget`): which peers were in one state, for `lastKnown`. */
  private readonly known = new Map<string, string>()

  constructor(private readonly own: () => Uint8Array, private readonly windowMs: number) {}

  /** This node's hash now, remembered as held. Call whenever it may have changed (after catalog events). */
  current(): Uint8Array {
    const hash = this.own()
    this.remember(hexOf(hash))
    return hash
  }

  /** `current()` as hex. */
  currentHex(): string {
    const hex = hexOf(this.own())
    this.remember(hex)
    return hex
  }

  /** Hex of the hash `peerId` last reported; undefined when it never did or reported none. */
  reportedBy(peerId: string): string | undefined {
    return this.reported.get(peerId)
  }

  /**
   * The hash `peerId` last reported, even from before it disconnected. Not evidence of what it holds now, but
   * two peers that last reported the same hash were in the same state: after a partition heals, the nodes of
   * the other side all come back with the same last report.
   */
  lastKnown(peerId: string): string | undefined {
    return this.reported.get(peerId) ?? this.known.get(peerId)
  }

  private remember(hex: string): void {
    const now = performance.now()
    this.mine.delete(hex)
    this.mine.set(hex, now)
    for (const [h, at] of this.mine) {
      if (now - at <= this.windowMs) break
      this.mine.delete(h)
    }
  }

  heard(peerId: string, hash: Uint8Array | undefined): void {
    this.current()
    if (hash === undefined) {
      this.reported.delete(peerId) // an older node: unknown, so it may differ
      return
    }
    if (this.reported.size >= 4096 && !this.reported.has(peerId)) this.reported.clear() // made-up peer ids must not grow it
    if (this.known.size >= 4096 && !this.known.has(peerId)) this.known.clear()
    const hex = hexOf(hash)
    this.reported.set(peerId, hex)
    this.known.set(peerId, hex)
  }

  /** A session with `peer` just left both sides level: what it reported before is outdated. */
  level(peerId: string): void {
    this.reported.set(peerId, this.currentHex())
  }

  mayDiffer(peerId: string): boolean {
    this.current()
    const theirs = this.reported.get(peerId)
    return theirs === undefined || !this.mine.has(theirs)
  }

  forget(peerId: string): void {
    this.reported.delete(peerId)
  }
}

export function hexOf(hash: Uint8Array): string {
  return Buffer.from(hash.buffer, hash.byteOffset, hash.byteLength).toString('hex')
}
