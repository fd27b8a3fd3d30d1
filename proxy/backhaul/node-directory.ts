import type { CatalogReader, Subscription } from '../../catalog/catalog-api.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { NodeRecord } from '../../schemas/catalog-records.js'

/**
 * Where each node's backhaul listens (the `backhaul` field of its membership record, DESIGN §2), kept
 * current from catalog events so that the connect phase reads a Map and never the catalog.
 */
export class NodeDirectory {
  private readonly addrs = new Map<string, string>()
  private subscription: Subscription | undefined

  constructor(private readonly catalog: Pick<CatalogReader, 'snapshot' | 'subscribe'>) {}

  start(): void {
    if (this.subscription !== undefined) return
    const snapshot = this.catalog.snapshot()
    for (const n of snapshot.nodes) this.upsert(n)
    this.subscription = this.catalog.subscribe({ fromSeq: snapshot.seq + 1 }, (e) => this.apply(e))
  }

  stop(): void {
    this.subscription?.close()
    this.subscription = undefined
  }

  /** host:port, or undefined when the node publishes no backhaul (not a worker, or no fleet CA). */
  backhaulOf(node: string): string | undefined {
    return this.addrs.get(node)
  }

  private apply(e: CatalogEvent): void {
    if (e.type === 'node.joined' || e.type === 'node.updated') this.upsert(e.node)
  }

  private upsert(n: NodeRecord): void {
    if (n.backhaul === undefined) this.addrs.delete(n.name)
    else this.addrs.set(n.name, n.backhaul)
  }
}
