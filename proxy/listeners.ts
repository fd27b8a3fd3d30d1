import { createServer, type Server, type Socket } from 'node:net'
import type { Logger } from 'pino'
import type { ListenerState } from './proxy-context.js'
import type { PortPlan } from './routing/port-plan.js'

/** One public port of this node. */
export interface Listener extends ListenerState {
  readonly bindPort: number
  server: Server
  /** The port actually bound (differs from bindPort when that is 0, as in tests). */
  boundPort: number | undefined
  error: string | undefined
}

export interface ListenerSetInit {
  /** Address public listeners bind (DESIGN §6: 127.0.0.1 on one host). */
  host: string
  bindPortOf(publicPort: number): number
  onConnection(socket: Socket, listener: Listener): void
  log: Logger
  /** What the log lines call these listeners (default "public"; Flycast listeners say "Flycast"). */
  kind?: string
}

/**
 * The public listeners, reconciled with the port plan whenever apps are deployed or removed: new ports
 * open and ports nobody serves close, without a restart (issue 6). Closing stops accepting; connections
 * already open finish on their own.
 */
export class ListenerSet {
  private readonly listeners = new Map<number, Listener>()
  private chain: Promise<void> = Promise.resolve()

  private readonly kind: string

  constructor(private readonly init: ListenerSetInit) {
    this.kind = init.kind ?? 'public'
  }

  /** Serialized: a reconcile starts after the previous one finished. */
  reconcile(plans: Map<number, PortPlan>): Promise<void> {
    this.chain = this.chain.then(() => this.apply(plans))
    return this.chain
  }

  get(publicPort: number): Listener | undefined { return this.listeners.get(publicPort) }

  all(): IterableIterator<Listener> { return this.listeners.values() }

  /** Stops accepting everywhere; resolves when every listening socket is closed. */
  close(): Promise<void> {
    this.chain = this.chain.then(async () => {
      await Promise.all([...this.listeners.values()].map((l) => closeServer(l.server)))
      this.listeners.clear()
    })
    return this.chain
  }

  private async apply(plans: Map<number, PortPlan>): Promise<void> {
    const closing: Promise<void>[] = []
    for (const [port, listener] of this.listeners) {
      const plan = plans.get(port)
      if (plan === undefined || listener.error !== undefined) {
        // gone, or failed to bind last time (tried again below while the plan still wants it)
        this.listeners.delete(port)
        closing.push(closeServer(listener.server))
        if (plan === undefined) this.init.log.info({ port, bound: listener.boundPort }, `${this.kind} listener closed`)
      } else {
        if (plan.front !== listener.plan.front) listener.tls = undefined
        listener.plan = plan
      }
    }
    const opening: Promise<void>[] = []
    for (const [port, plan] of plans) {
      if (this.listeners.has(port)) continue
      for (const c of plan.conflicts) this.init.log.warn({ port, app: c.app, reason: c.reason }, 'app cannot share this public port')
      opening.push(this.open(port, plan))
    }
    await Promise.all([...closing, ...opening])
  }

  private open(publicPort: number, plan: PortPlan): Promise<void> {
    const bindPort = this.init.bindPortOf(publicPort)
    const server = createServer({ allowHalfOpen: true, noDelay: true })
    const listener: Listener = { publicPort, bindPort, plan, server, tls: undefined, boundPort: undefined, error: undefined }
    this.listeners.set(publicPort, listener)
    server.on('connection', (socket: Socket) => this.init.onConnection(socket, listener))
    return new Promise((resolve) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        listener.error = err.code ?? err.message
        this.init.log.error({ err, port: publicPort, bind: `${this.init.host}:${bindPort}` }, `${this.kind} listener could not bind; its apps are unreachable on this port`)
        resolve()
      }
      server.once('error', onError)
      server.listen({ host: this.init.host, port: bindPort, backlog: 2048 }, () => {
        server.removeListener('error', onError)
        server.on('error', (err) => this.init.log.error({ err, port: publicPort }, `${this.kind} listener failed`))
        const address = server.address()
        listener.boundPort = typeof address === 'object' && address !== null ? address.port : bindPort
        this.init.log.info({ port: publicPort, bind: `${this.init.host}:${listener.boundPort}`, front: plan.front, apps: [...plan.apps.keys()] }, `${this.kind} listener open`)
        resolve()
      })
    })
  }
}

/** Stops accepting at once; connections already open are not waited for (drain handles them). */
async function closeServer(server: Server): Promise<void> {
  if (server.listening) server.close()
}
