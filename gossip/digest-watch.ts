/** Disconnects this close together are taken for one event (a dead connection is found within 10 s). */
const AWAY_TOGETHER_MS = 10_000

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
  /** Peer id → performance.now() when it disconnected; kept until a session leaves it level (`awayTogether`). */
  private readonly gone = new Map<string, number>()
  /** Peer id → performance.now() when it last connected. */
  private readonly connectedAt = new Map<string, number>()

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

  /**
   * Both peers disconnected within `AWAY_TOGETHER_MS` of each other and neither has been synced with since:
   * one event (a partition, a cut link) most likely took both, and they come back holding much the same —
   * even when the hashes they last reported differ, as they do on a side that kept writing.
   */
  awayTogether(a: string, b: string): boolean {
    const ga = this.gone.get(a)
    const gb = this.gone.get(b)
    return ga !== undefined && gb !== undefined && Math.abs(ga - gb) <= AWAY_TOGETHER_MS
  }

  /** `peerId` connected (or reconnected) just now. */
  connected(peerId: string): void {
    if (this.connectedAt.size >= 4096 && !this.connectedAt.has(peerId)) this.connectedAt.clear()
    this.connectedAt.set(peerId, performance.now())
  }

  /** `peerId` came back from being away (see `awayTogether`) less than `withinMs` ago, and is still unsynced. */
  justReturned(peerId: string, withinMs: number): boolean {
    const at = this.connectedAt.get(peerId)
    return this.gone.has(peerId) && at !== undefined && performance.now() - at < withinMs
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
    this.gone.delete(peerId)
  }

  mayDiffer(peerId: string): boolean {
    this.current()
    const theirs = this.reported.get(peerId)
    return theirs === undefined || !this.mine.has(theirs)
  }

  forget(peerId: string): void {
    this.reported.delete(peerId)
    this.connectedAt.delete(peerId)
    if (this.gone.size >= 4096 && !this.gone.has(peerId)) this.gone.clear()
    // the first disconnect counts: a peer that flaps while away is still away since then
    if (!this.gone.has(peerId)) this.gone.set(peerId, performance.now())
  }
}

export function hexOf(hash: Uint8Array): string {
  return Buffer.from(hash.buffer, hash.byteOffset, hash.byteLength).toString('hex')
}
