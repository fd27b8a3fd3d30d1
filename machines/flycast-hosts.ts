import { rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { CatalogReader, Subscription } from '../catalog/catalog-api.js'
import { flycastName, flycastOwners } from '../schemas/flycast.js'

/** `<dataDir>/flycast-hosts`: every Machine of the node finds it through `$FLY_FLYCAST_HOSTS`. */
export const FLYCAST_HOSTS_FILE = 'flycast-hosts'

export function flycastHostsPath(dataDir: string): string {
  return join(dataDir, FLYCAST_HOSTS_FILE)
}

/**
 * The node's Flycast names in /etc/hosts format (`127.77.3.9  web.flycast`), one line per app that owns
 * its address (a clash shows only the owner, as the proxy binds only the owner's listeners).
 */
export function renderFlycastHosts(apps: Iterable<{ readonly name: string; readonly flycast?: string }>): string {
  const lines = [...flycastOwners(apps)].map(([address, app]) => ({ address, app })).sort((a, b) => (a.app < b.app ? -1 : 1))
  return '# Flycast names of this fleet, written by edgeproxy (docs/replay-and-flycast.md). Read it at each lookup:\n'
    + '# addresses may be allocated or moved while a Machine runs.\n'
    + lines.map((l) => `${l.address}\t${flycastName(l.app)}\n`).join('')
}

export interface FlycastHostsInit { dataDir: string }
export interface FlycastHostsComponents {
  catalog: Pick<CatalogReader, 'snapshot' | 'subscribe'>
  log: Logger
}

export interface FlycastHosts {
  start(): Promise<void>
  stop(): Promise<void>
  readonly path: string
}

/**
 * How a Machine resolves `<app>.flycast` without root (no /etc/hosts edit, no port 53): this node keeps a
 * hosts-format file of every Flycast name in its data directory, rewritten (atomically, by rename) when
 * an address is allocated or moves, and every Machine gets its path in `FLY_FLYCAST_HOSTS`.
 */
export function flycastHostsFile(init: FlycastHostsInit) {
  return (c: FlycastHostsComponents): FlycastHosts => new DefaultFlycastHosts(c, flycastHostsPath(init.dataDir))
}

class DefaultFlycastHosts implements FlycastHosts {
  private readonly apps = new Map<string, string>()
  private subscription: Subscription | undefined
  private writing: Promise<void> = Promise.resolve()
  private written: string | undefined
  private dirty = false

  constructor(private readonly c: FlycastHostsComponents, readonly path: string) {}

  async start(): Promise<void> {
    const snapshot = this.c.catalog.snapshot()
    for (const app of snapshot.apps) if (app.flycast !== undefined && app.flycast !== '') this.apps.set(app.name, app.flycast)
    this.subscription = this.c.catalog.subscribe({ fromSeq: snapshot.seq + 1 }, (evt) => {
      if (evt.type === 'app.upserted') {
        const before = this.apps.get(evt.app.name)
        const after = evt.app.flycast === '' ? undefined : evt.app.flycast
        if (before === after) return
        if (after === undefined) this.apps.delete(evt.app.name)
        else this.apps.set(evt.app.name, after)
        this.schedule()
      } else if (evt.type === 'app.removed' && this.apps.delete(evt.app)) {
        this.schedule()
      }
    })
    this.schedule()
    await this.writing
  }

  async stop(): Promise<void> {
    this.subscription?.close()
    this.subscription = undefined
    await this.writing
  }

  /** Writes are serialized and coalesced: a burst of changes gives one rewrite with the latest names. */
  private schedule(): void {
    if (this.dirty) return
    this.dirty = true
    this.writing = this.writing.then(async () => {
      this.dirty = false
      const text = renderFlycastHosts([...this.apps].map(([name, flycast]) => ({ name, flycast })))
      if (text === this.written) return
      const tmp = `${this.path}.tmp`
      try {
        await writeFile(tmp, text, { mode: 0o644 })
        await rename(tmp, this.path) // readers see the old file or the new one, never half of one
        this.written = text
      } catch (err) {
        this.c.log.error({ err, path: this.path }, 'cannot write the Flycast hosts file; Machines cannot resolve <app>.flycast names')
      }
    })
  }
}
