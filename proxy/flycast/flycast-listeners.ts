import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { type Listener, ListenerSet } from '../listeners.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import { flycastPlans } from './flycast-plans.js'

export interface FlycastListenersInit {
  /** An app's port → the port bound on its Flycast address (default: the same port, as Fly does). */
  bindPortOf(publicPort: number): number
  onConnection(socket: Socket, listener: Listener): void
  log: Logger
}

/**
 * The private listeners of every app with a Flycast address (FLY-SPEC §9): one listener set per app,
 * bound on that address only, never on the public one. Connections run the same lifecycle as public ones
 * (handlers, balancing, autostart, replay). Reconciled with the catalog like the public listeners.
 */
export class FlycastListeners {
  private readonly byApp = new Map<string, { address: string; set: ListenerSet }>()
  private chain: Promise<void> = Promise.resolve()
  private readonly warned = new Set<string>()

  constructor(private readonly init: FlycastListenersInit) {}

  /** Serialized like ListenerSet.reconcile: one reconcile at a time, in order. */
  reconcile(index: RoutingIndex): Promise<void> {
    const wanted = flycastPlans(index)
    for (const c of wanted.conflicts) {
      const key = `${c.app}@${c.address}`
      if (this.warned.has(key)) continue
      this.warned.add(key)
      this.init.log.warn({ app: c.app, address: c.address, owner: c.owner }, 'Flycast address claimed by two apps; the first by name keeps it, the other is being given a new one')
    }
    this.chain = this.chain.then(async () => {
      const closing: Promise<void>[] = []
      for (const [app, entry] of this.byApp) {
        const want = wanted.apps.get(app)
        if (want === undefined || want.address !== entry.address) {
          this.byApp.delete(app)
          closing.push(entry.set.close())
          this.init.log.info({ app, address: entry.address }, 'Flycast listeners closed')
        }
      }
      await Promise.all(closing)
      const opening: Promise<void>[] = []
      for (const [app, want] of wanted.apps) {
        let entry = this.byApp.get(app)
        if (entry === undefined) {
          entry = {
            address: want.address,
            set: new ListenerSet({
              host: want.address,
              bindPortOf: this.init.bindPortOf,
              onConnection: this.init.onConnection,
              log: this.init.log.child({ flycast: app }),
              kind: 'Flycast',
            }),
          }
          this.byApp.set(app, entry)
        }
        opening.push(entry.set.reconcile(want.plans))
      }
      await Promise.all(opening)
    })
    return this.chain
  }

  /** The port bound for an app's service port on its Flycast address. */
  boundPort(app: string, publicPort: number): number | undefined {
    return this.byApp.get(app)?.set.get(publicPort)?.boundPort
  }

  /** The address an app's listeners are bound on here (undefined: none). */
  address(app: string): string | undefined {
    return this.byApp.get(app)?.address
  }

  close(): Promise<void> {
    this.chain = this.chain.then(async () => {
      await Promise.all([...this.byApp.values()].map((e) => e.set.close()))
      this.byApp.clear()
    })
    return this.chain
  }
}
