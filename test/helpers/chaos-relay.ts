import net from 'node:net'

/**
 * A TCP relay to put between two nodes when the kernel has no netem: listen on 127.0.0.1, forward to a
 * target, and misbehave on demand — refuse (reset) connections, black-hole them (silence: nothing gets
 * through until healed), delay each direction, lose a share of new connections or of forwarded chunks. Rules can be
 * switched at runtime and scoped to the client's source address, so that one relay in front of a node can
 * cut off some peers and not others (give each peer its own 127.x address to dial from).
 *
 * @example
 * const relay = await startChaosRelay({ target: { host: '127.0.0.1', port: 4001 } })
 * relay.set({ delayMs: { up: 40, down: 40 } })      // 80 ms RTT through the relay
 * relay.set({ mode: 'refuse' }, { from: '127.0.0.12' }) // partition: 127.0.0.12 is cut off
 * relay.reset()                                      // heal
 * await relay.close()
 */
export type RelayMode = 'pass' | 'refuse' | 'blackhole'

export interface ChaosRules {
  /**
   * pass: forward. refuse: reset new and open connections. blackhole: new connections are accepted and
   * never answered; open ones stall — bytes are held, as TCP retransmission would, and delivered on heal.
   */
  mode: RelayMode
  /** Added one-way latency in ms: `up` client→target, `down` target→client. Byte order is kept. */
  delayMs: { up: number; down: number }
  /** Share (0..1) of new connections reset right after accept. */
  connectionLoss: number
  /** Share (0..1) of forwarded chunks dropped. Encrypted streams then fail and are reset by their ends. */
  byteLoss: number
}

export interface ChaosScope {
  /** Client source addresses (e.g. `127.0.0.12`) the rules apply to; all clients when absent. */
  from?: string | string[]
}

export interface ChaosTarget { host: string; port: number }

export interface ChaosRelayInit {
  target: ChaosTarget
  host?: string
  port?: number
  rules?: Partial<ChaosRules>
  /** Seed for the loss decisions, for reproducible runs. */
  seed?: number
}

export interface ChaosRelayStats {
  accepted: number
  refused: number
  connectionsLost: number
  chunksDropped: number
  active: number
  bytesUp: number
  bytesDown: number
}

export interface ChaosRelay {
  readonly host: string
  readonly port: number
  /** `/ip4/<host>/tcp/<port>`, to announce or dial instead of the target. */
  multiaddr(): string
  set(rules: Partial<ChaosRules>, scope?: ChaosScope): void
  /** Drops the scoped overrides (or, without scope, every rule): back to plain forwarding. */
  reset(scope?: ChaosScope): void
  /** New connections go here from now on (a restarted node may listen on a new port). */
  setTarget(target: ChaosTarget): void
  /** Resets the open connections (of the scope), as a cable pulled and plugged back would. */
  cut(scope?: ChaosScope): void
  stats(): ChaosRelayStats
  close(): Promise<void>
}

const PASS: ChaosRules = { mode: 'pass', delayMs: { up: 0, down: 0 }, connectionLoss: 0, byteLoss: 0 }
/** Queued bytes per direction above which the sending side is paused. */
const HIGH_WATER = 1024 * 1024

type Dir = 'up' | 'down'
interface Pending { dueAt: number; chunk: Buffer | null } // null: end of stream

class Link {
  readonly queues: Record<Dir, Pending[]> = { up: [], down: [] }
  readonly queued: Record<Dir, number> = { up: 0, down: 0 }
  readonly timers: Record<Dir, NodeJS.Timeout | undefined> = { up: undefined, down: undefined }
  /** Bytes held while black-holed, delivered in order when the link passes again. */
  readonly held: Record<Dir, Array<Buffer | null>> = { up: [], down: [] }
  heldBytes = 0
  constructor(readonly source: string, readonly client: net.Socket, readonly upstream: net.Socket | undefined) {}

  from(dir: Dir): net.Socket | undefined { return dir === 'up' ? this.client : this.upstream }
  to(dir: Dir): net.Socket | undefined { return dir === 'up' ? this.upstream : this.client }

  destroy(): void {
    clearTimeout(this.timers.up)
    clearTimeout(this.timers.down)
    resetSocket(this.client)
    if (this.upstream !== undefined) resetSocket(this.upstream)
  }
}

function resetSocket(s: net.Socket): void {
  if (s.destroyed) return
  if (typeof s.resetAndDestroy === 'function' && !s.connecting) s.resetAndDestroy()
  else s.destroy()
}

function normalizeHost(addr: string | undefined): string {
  return (addr ?? '').replace(/^::ffff:/, '')
}

function scopeHosts(scope: ChaosScope | undefined): string[] | undefined {
  if (scope?.from === undefined) return undefined
  return Array.isArray(scope.from) ? scope.from : [scope.from]
}

/** mulberry32: tiny, seedable, good enough to decide losses. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export async function startChaosRelay(init: ChaosRelayInit): Promise<ChaosRelay> {
  const relay = new DefaultChaosRelay(init)
  await relay.listen(init.host ?? '127.0.0.1', init.port ?? 0)
  return relay
}

class DefaultChaosRelay implements ChaosRelay {
  private readonly server: net.Server
  private readonly links = new Set<Link>()
  private defaults: ChaosRules
  private readonly overrides = new Map<string, Partial<ChaosRules>>()
  private target: ChaosTarget
  private readonly random: () => number
  private readonly counters = { accepted: 0, refused: 0, connectionsLost: 0, chunksDropped: 0, bytesUp: 0, bytesDown: 0 }
  host = ''
  port = 0

  constructor(init: ChaosRelayInit) {
    this.target = init.target
    this.defaults = { ...PASS, ...init.rules }
    this.random = init.seed === undefined ? Math.random : seededRandom(init.seed)
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.accept(s))
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => { this.server.off('error', reject); resolve() })
    })
    const addr = this.server.address() as net.AddressInfo
    this.host = addr.address
    this.port = addr.port
  }

  multiaddr(): string { return `/ip4/${this.host}/tcp/${this.port}` }

  set(rules: Partial<ChaosRules>, scope?: ChaosScope): void {
    const hosts = scopeHosts(scope)
    if (hosts === undefined) this.defaults = { ...this.defaults, ...rules }
    else for (const h of hosts) this.overrides.set(h, { ...this.overrides.get(h), ...rules })
    for (const link of [...this.links]) this.enforce(link)
  }

  reset(scope?: ChaosScope): void {
    const hosts = scopeHosts(scope)
    if (hosts === undefined) {
      this.defaults = { ...PASS }
      this.overrides.clear()
    } else {
      for (const h of hosts) this.overrides.delete(h)
    }
    for (const link of [...this.links]) this.enforce(link)
  }

  setTarget(target: ChaosTarget): void { this.target = target }

  cut(scope?: ChaosScope): void {
    const hosts = scopeHosts(scope)
    for (const link of [...this.links]) {
      if (hosts === undefined || hosts.includes(link.source)) this.drop(link)
    }
  }

  stats(): ChaosRelayStats { return { ...this.counters, active: this.links.size } }

  async close(): Promise<void> {
    for (const link of [...this.links]) this.drop(link)
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private rulesFor(source: string): ChaosRules {
    const o = this.overrides.get(source)
    return o === undefined ? this.defaults : { ...this.defaults, ...o, delayMs: o.delayMs ?? this.defaults.delayMs }
  }

  private accept(client: net.Socket): void {
    const source = normalizeHost(client.remoteAddress)
    const rules = this.rulesFor(source)
    client.on('error', () => { /* the peer's reset; the link is dropped on close */ })
    if (rules.mode === 'refuse') {
      this.counters.refused++
      resetSocket(client)
      return
    }
    if (rules.connectionLoss > 0 && this.random() < rules.connectionLoss) {
      this.counters.connectionsLost++
      resetSocket(client)
      return
    }
    this.counters.accepted++
    client.setNoDelay(true)
    // a black-holed connection never reaches the target: the client just hears nothing
    const upstream = rules.mode === 'blackhole'
      ? undefined
      : net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true, noDelay: true })
    const link = new Link(source, client, upstream)
    this.links.add(link)
    // an error resets the other side at once; a graceful close lets the other side finish its delayed bytes
    let open = upstream === undefined ? 1 : 2
    const onClose = (hadError: boolean): void => {
      if (hadError) this.drop(link)
      else if (--open === 0) this.links.delete(link)
    }
    client.on('close', onClose)
    client.on('data', (chunk: Buffer) => this.forward(link, 'up', chunk))
    client.on('end', () => this.forward(link, 'up', null))
    if (upstream !== undefined) {
      upstream.on('error', () => { /* target gone: drop the link, the client sees a reset */ })
      upstream.on('close', onClose)
      upstream.on('data', (chunk: Buffer) => this.forward(link, 'down', chunk))
      upstream.on('end', () => this.forward(link, 'down', null))
    }
    client.resume()
  }

  /** Applies a rule change to an open link. */
  private enforce(link: Link): void {
    const mode = this.rulesFor(link.source).mode
    if (mode === 'refuse') { this.drop(link); return }
    if (mode === 'pass' && link.heldBytes + link.held.up.length + link.held.down.length > 0) {
      link.heldBytes = 0
      for (const dir of ['up', 'down'] as const) {
        const held = link.held[dir].splice(0)
        for (const chunk of held) this.forward(link, dir, chunk)
        link.from(dir)?.resume()
      }
    }
  }

  private drop(link: Link): void {
    if (!this.links.delete(link)) return
    link.destroy()
  }

  private forward(link: Link, dir: Dir, chunk: Buffer | null): void {
    const rules = this.rulesFor(link.source)
    if (rules.mode === 'refuse') { this.drop(link); return }
    if (link.to(dir) === undefined) return // accepted while black-holed: never connected, bytes swallowed
    if (rules.mode === 'blackhole') {
      link.held[dir].push(chunk)
      if (chunk !== null) {
        link.heldBytes += chunk.byteLength
        if (link.heldBytes > HIGH_WATER) link.from(dir)?.pause() // the sender's TCP window fills, as on a real stall
      }
      return
    }
    if (chunk !== null) {
      if (rules.byteLoss > 0 && this.random() < rules.byteLoss) { this.counters.chunksDropped++; return }
      if (dir === 'up') this.counters.bytesUp += chunk.byteLength
      else this.counters.bytesDown += chunk.byteLength
    }
    const delay = rules.delayMs[dir]
    const queue = link.queues[dir]
    if (delay <= 0 && queue.length === 0) { this.write(link, dir, chunk); return }
    const last = queue.at(-1)?.dueAt ?? 0
    queue.push({ dueAt: Math.max(performance.now() + delay, last), chunk })
    if (chunk !== null) {
      link.queued[dir] += chunk.byteLength
      if (link.queued[dir] > HIGH_WATER) link.from(dir)?.pause()
    }
    this.schedule(link, dir)
  }

  private schedule(link: Link, dir: Dir): void {
    if (link.timers[dir] !== undefined) return
    const head = link.queues[dir][0]
    if (head === undefined) return
    link.timers[dir] = setTimeout(() => {
      link.timers[dir] = undefined
      const queue = link.queues[dir]
      const now = performance.now()
      while (queue.length > 0 && queue[0].dueAt <= now + 1) {
        const { chunk } = queue.shift()!
        if (chunk !== null) link.queued[dir] -= chunk.byteLength
        this.write(link, dir, chunk)
      }
      if (link.queued[dir] <= HIGH_WATER) link.from(dir)?.resume()
      this.schedule(link, dir)
    }, Math.max(0, head.dueAt - performance.now()))
  }

  private write(link: Link, dir: Dir, chunk: Buffer | null): void {
    const to = link.to(dir)
    if (to === undefined || to.destroyed) return
    if (chunk === null) { to.end(); return }
    if (!to.write(chunk)) {
      const from = link.from(dir)
      from?.pause()
      to.once('drain', () => from?.resume())
    }
  }
}
