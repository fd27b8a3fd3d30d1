import { staticRegionRtt } from './regions.js'

/**
 * How far this node is from another node, in round-trip milliseconds. Gossip measures it (libp2p ping) and
 * is injected here later (DESIGN §3 "Closeness"); until then, and for nodes it has not measured yet, the
 * static region table stands in.
 */
export interface ClosenessView {
  /** ms; undefined when unknown; 0 for this node itself. */
  rttToNode(node: string): number | undefined
  /** Optional: called when measurements changed enough to re-sort candidates. */
  onChange?(listener: () => void): () => void
}

/** Distances from this node, measured where known and estimated from regions otherwise. */
export class Closeness {
  /** Bumped whenever an ordering computed from it may be stale (cached orders compare it). */
  epoch = 0

  constructor(
    private readonly selfNode: string,
    private readonly selfRegion: string,
    private readonly view: ClosenessView | undefined,
  ) {}

  rttTo(node: string, nodeRegion: string): number {
    if (node === this.selfNode) return 0
    const measured = this.view?.rttToNode(node)
    return measured ?? staticRegionRtt(this.selfRegion, nodeRegion)
  }

  invalidate(): void { this.epoch++ }
}
