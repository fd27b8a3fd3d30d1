import type { CatalogReader, CatalogWriter, Subscription } from '../../catalog/catalog-api.js'
import type { AppRecord } from '../../schemas/catalog-records.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { allocateFlycastAddress, flycastOwners, type FlycastRange } from '../../schemas/flycast.js'

/** The log lines it writes (pino or fastify's logger). */
export interface FlycastLog {
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export type FlycastCatalog = Pick<CatalogReader, 'getApp' | 'listApps' | 'lastSeq' | 'subscribe'> & Pick<CatalogWriter, 'setFlycast'>

/**
 * Gives apps their Flycast address (FLY-SPEC §9) and keeps addresses unique across the fleet.
 *
 * An address is derived from the app name (schemas/flycast.ts: hash, then probe past the addresses the
 * catalog shows taken), and allocations on one node run one at a time. Two nodes allocating at the same
 * moment may still pick the same address before gossip tells either about the other; once the catalogs
 * converge, every node sees the clash, the app whose name sorts first keeps the address, and every node's
 * allocator gives the other app the next free address along its own probe sequence. They all compute the
 * same value from the same catalog, so their concurrent writes agree, and the proxies meanwhile bind only
 * the owner's listeners.
 */
export class FlycastAllocator {
  private chain: Promise<unknown> = Promise.resolve()
  private subscription: Subscription | undefined
  private repairQueued = false

  constructor(private readonly catalog: FlycastCatalog, private readonly range: FlycastRange, private readonly log: FlycastLog) {}

  /** The app's address, allocated now when it has none (or lost it to a clash). Idempotent. */
  allocate(app: string): Promise<{ record: AppRecord; allocated: boolean }> {
    return this.serial(async () => {
      const record = this.catalog.getApp(app)
      if (record === undefined) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${app}"; see \`edgeproxy apps ls\``)
      const owners = flycastOwners(this.catalog.listApps())
      if (record.flycast !== undefined && record.flycast !== '' && owners.get(record.flycast) === app) return { record, allocated: false }
      return { record: await this.assign(record.name, owners), allocated: true }
    })
  }

  /** Watches the catalog for clashes (addresses arriving from other nodes) and repairs them. */
  start(): void {
    if (this.subscription !== undefined) return
    this.subscription = this.catalog.subscribe({ fromSeq: this.catalog.lastSeq + 1 }, (evt) => {
      if (evt.type === 'app.upserted' && evt.app.flycast !== undefined) this.queueRepair()
    })
    this.queueRepair()
  }

  async stop(): Promise<void> {
    this.subscription?.close()
    this.subscription = undefined
    await this.chain.catch(() => undefined)
  }

  private queueRepair(): void {
    if (this.repairQueued) return
    this.repairQueued = true
    this.serial(async () => {
      this.repairQueued = false
      await this.repair()
    }).catch((err: unknown) => this.log.error({ err }, 'Flycast address repair failed; it is tried again on the next app change'))
  }

  /** Every app whose address another app owns gets a new one. */
  private async repair(): Promise<void> {
    const apps = this.catalog.listApps()
    const owners = flycastOwners(apps)
    const losers = apps.filter((a) => a.flycast !== undefined && a.flycast !== '' && owners.get(a.flycast) !== a.name).map((a) => a.name).sort()
    for (const name of losers) {
      const lost = this.catalog.getApp(name)?.flycast
      const now = flycastOwners(this.catalog.listApps())
      if (lost === undefined || now.get(lost) === name) continue // repaired meanwhile (by gossip from a peer)
      const record = await this.assign(name, now)
      this.log.warn({ app: name, lost, owner: now.get(lost), address: record.flycast }, 'Flycast address clash repaired: the app has a new address')
    }
  }

  private async assign(app: string, owners: Map<string, string>): Promise<AppRecord> {
    const taken = new Set([...owners].filter(([, owner]) => owner !== app).map(([addr]) => addr))
    const address = allocateFlycastAddress(this.range, app, taken)
    if (address === undefined) {
      throw new EdgeProxyError('EP_CONFLICT', `no free Flycast address left in ${this.range.cidr}; widen --flycast-range on every node`)
    }
    return this.catalog.setFlycast(app, address)
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work, work)
    this.chain = run.catch(() => undefined)
    return run
  }
}
