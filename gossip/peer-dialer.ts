import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { connectedPeerIds, type GossipLibp2p } from './libp2p-node.js'
import type { GossipCounters } from './stats.js'
import { Throttle } from './throttle.js'

/**
 * Keeps this node connected (DESIGN §3): dials the `--bootstrap` addresses (a peer id is optional there) and
 * every node learned from heartbeats and node records, so the mesh is not a star around the seed, and
 * redials with a capped backoff — a healed partition reconnects within about `maxBackoffMs` (10 s once a
 * peer has been unreachable for a minute: by then it is more likely gone than partitioned). More than three
 * unreachable peers share a budget of `redialsPerSecond` (see `redialFailing`): the first link across a healed
 * cut still comes back at once, the others a few a second.
 *
 * Of two nodes that both know each other, the one with the smaller peer id dials; the other retries only every
 * `answerWaitMs`, in case the first cannot reach it (one-way reachability). Both dialling at once after a heal
 * gave most pairs two connections — two handshakes, two identify exchanges, two sets of gossipsub streams —
 * and on 20 nodes that doubled work kept every core busy for seconds (a connection costs ~30 ms of CPU).
 */
export interface PeerDialerOptions {
  tickMs: number
  minBackoffMs: number
  maxBackoffMs: number
  /** Learned (non-bootstrap) nodes are dialled only while fewer peers than this are connected. */
  maxPeers: number
  dialTimeoutMs: number
  /** How long the node with the larger peer id waits between its own dials of a learned peer. */
  answerWaitMs: number
  /** Redials of peers whose last dial failed, per second, all such peers together (a token bucket). */
  redialsPerSecond: number
}

interface Target {
  label: string
  addrs: Multiaddr[]
  /** The addresses as learned, to skip re-parsing the same ones from every heartbeat. */
  learned: string
  peerId: string | undefined
  bootstrap: boolean
  nextAt: number
  backoff: number
  inflight: boolean
  /** The last attempt failed and was logged; say so once more only when it works again. */
  failing: boolean
  /** performance.now() of the first failure in the current run of failures. */
  failingSince: number
  /** The larger peer id of a pair dials no earlier than this (it leaves dialling to the smaller). */
  answerAt: number
}

/** A peer unreachable this long is probably gone, not partitioned: redial it less often. */
const LONG_FAILURE_MS = 60_000
const LONG_FAILURE_BACKOFF_MS = 10_000
/** Unreachable peers redialled each on its own backoff; beyond this many they share `redialsPerSecond`. */
const FREE_FAILING = 3
const REDIAL_BUCKET = 'redials'
/**
 * The part of the redial budget, on top of it, for unreachable peers that should dial this node. They are
 * redialled only in case reachability is one-way; when they shared the budget, longest-waiting first, they had
 * waited longest (a larger peer id waits `answerWaitMs` between its dials), so at a heal both ends of most cut
 * links dialled: 23–32 connections per node for 19 peers, a handshake and an identify exchange too many for each.
 */
const ANSWER_SHARE = 1 / 8
/**
 * When an unreachable peer comes back after a run of failed redials while more than FREE_FAILING others are still
 * unreachable, a partition has most likely healed: the budgeted redials stop for this long. One link across is what
 * levels the catalogs (its session on connect, then relays over the links that never broke); at a 10 | 10 heal of
 * 20 processes on two cores the other ~100 handshakes took the CPU that work needed. The redials that follow the
 * pause succeed, so the rest of the links come back at the budget's pace without pausing again.
 */
const HEAL_PAUSE_MS = 2_500
/** Failed redials since the last return that make the next return a heal (two seconds' worth of the default budget). */
const HEAL_AFTER_FAILURES = 4

export class PeerDialer {
  private readonly targets = new Map<string, Target>()
  private timer: NodeJS.Timeout | undefined
  private readonly stopping = new AbortController()
  /** One bucket for all redials of failing targets: `redialsPerSecond`, at most one second's worth at once. */
  private readonly redials: Throttle
  /** A smaller one for failing targets that dial this node (`leftToThem`): ANSWER_SHARE of the budget. */
  private readonly answerRedials: Throttle
  /** performance.now() until which budgeted redials wait (HEAL_PAUSE_MS). */
  private redialsPausedUntil = 0
  /** Redials that failed since a failing peer last came back. */
  private failuresSinceReturn = 0

  constructor(
    private readonly libp2p: GossipLibp2p,
    private readonly log: Logger,
    private readonly counters: GossipCounters,
    private readonly o: PeerDialerOptions,
  ) {
    this.redials = new Throttle({ perSecond: o.redialsPerSecond, burst: Math.max(1, o.redialsPerSecond) })
    this.answerRedials = new Throttle({ perSecond: o.redialsPerSecond * ANSWER_SHARE, burst: 1 })
  }

  start(bootstrap: string[]): void {
    for (const addr of bootstrap) {
      const ma = multiaddr(addr)
      const peerId = ma.getComponents().findLast((c) => c.name === 'p2p')?.value
      if (peerId === this.self) continue
      this.targets.set(`bootstrap ${addr}`, this.target(`bootstrap ${addr}`, [ma], peerId, true))
    }
    this.timer = setInterval(() => this.tick(), this.o.tickMs)
    this.tick()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.stopping.abort()
  }

  /** A node's current addresses; replaces what was known for that peer id. */
  learn(node: string, peerId: string, addrs: string[]): void {
    if (peerId === this.self || addrs.length === 0) return
    const learned = addrs.join(' ')
    const known = this.targets.get(peerId)
    if (known !== undefined && known.learned === learned) return
    const parsed: Multiaddr[] = []
    for (const a of addrs) {
      try {
        const ma = multiaddr(a)
        const id = ma.getComponents().findLast((c) => c.name === 'p2p')?.value
        if (id === undefined) parsed.push(ma.encapsulate(`/p2p/${peerId}`))
        else if (id === peerId) parsed.push(ma)
      } catch (err) {
        this.log.debug({ err, node, addr: a }, 'ignoring an address that is not a multiaddr')
      }
    }
    if (parsed.length === 0) return
    if (known !== undefined) {
      known.addrs = parsed
      known.learned = learned
      return
    }
    const t = this.target(`node ${node}`, parsed, peerId, false)
    t.learned = learned
    this.targets.set(peerId, t)
  }

  /** A node left the fleet: stop dialling it. */
  forget(peerId: string): void {
    this.targets.delete(peerId)
  }

  private get self(): string { return this.libp2p.peerId.toString() }

  private target(label: string, addrs: Multiaddr[], peerId: string | undefined, bootstrap: boolean): Target {
    return { label, addrs, learned: '', peerId, bootstrap, nextAt: 0, backoff: this.o.minBackoffMs, inflight: false, failing: false, failingSince: 0, answerAt: performance.now() + this.o.answerWaitMs }
  }

  private tick(): void {
    const connected = connectedPeerIds(this.libp2p)
    const now = performance.now()
    const failingDue: Target[] = []
    let failing = 0
    for (const t of this.targets.values()) {
      if (t.peerId !== undefined && connected.has(t.peerId)) {
        t.backoff = this.o.minBackoffMs
        if (t.failing) this.returned(t, now) // it dialled this node
        continue
      }
      if (t.failing) failing++
      if (t.inflight) continue
      if (!t.bootstrap && connected.size >= this.o.maxPeers) continue
      // a bootstrap address that turned out to be a node we already dial by peer id is covered there
      if (t.bootstrap && this.leftToThem(t) && !t.failing) continue
      if (now < t.nextAt) continue
      if (!t.bootstrap && this.leftToThem(t) && now < t.answerAt) continue
      if (t.failing) failingDue.push(t)
      else void this.dial(t)
    }
    this.redialFailing(failingDue, failing)
  }

  /**
   * A few unreachable peers (a node down, a small partition) are redialled each on its own backoff. Beyond
   * FREE_FAILING, this node is cut off from a part of the fleet, and the redials share one budget,
   * longest-waiting first. Cut off from half of a 20-node fleet, each node redialled ten peers every half
   * second: the failed dials kept the fleet at 1.1–1.4 cores for the whole partition, and at the heal every cut
   * link came back at once, so the sessions and relays that level the fleet waited for CPU behind ~100
   * handshakes. With the budget the first link across still comes back within a fraction of a second (every
   * node on both sides keeps trying one peer or another), and the others follow a few per second.
   */
  private redialFailing(due: Target[], failing: number): void {
    const budgeted = failing > FREE_FAILING
    if (budgeted && performance.now() < this.redialsPausedUntil) return
    if (budgeted) due.sort((a, b) => a.nextAt - b.nextAt)
    for (const t of due) {
      if (budgeted && !(this.leftToThem(t) ? this.answerRedials : this.redials).take(REDIAL_BUCKET)) continue
      void this.dial(t)
    }
  }

  /** A failing target is connected again, by either side's dial. */
  private returned(t: Target, now: number): void {
    t.failing = false
    this.log.info({ target: t.label }, 'peer reachable again')
    let stillFailing = 0
    for (const other of this.targets.values()) if (other.failing) stillFailing++
    if (stillFailing >= FREE_FAILING && this.failuresSinceReturn >= HEAL_AFTER_FAILURES) {
      this.redialsPausedUntil = now + HEAL_PAUSE_MS
      this.counters.redialPauses++
    }
    this.failuresSinceReturn = 0
  }

  /**
   * A target this node leaves to another dial: a peer with a smaller peer id (it dials this node), or a bootstrap
   * address of a node also dialled by peer id.
   */
  private leftToThem(t: Target): boolean {
    if (t.peerId === undefined) return false
    return t.bootstrap ? this.targets.has(t.peerId) : t.peerId < this.self
  }

  private async dial(t: Target): Promise<void> {
    t.inflight = true
    t.answerAt = performance.now() + this.o.answerWaitMs
    try {
      const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.o.dialTimeoutMs)])
      const conn = await this.libp2p.dial(t.addrs, { signal })
      t.peerId = conn.remotePeer.toString()
      t.backoff = this.o.minBackoffMs
      if (t.failing) this.returned(t, performance.now())
    } catch (err) {
      if (this.stopping.signal.aborted) return
      this.counters.dialFailures++
      if (t.failing) this.failuresSinceReturn++
      const now = performance.now()
      if (!t.failing) t.failingSince = now
      // jitter spreads the redials of a whole fleet; never beyond the backoff, which bounds heal time
      t.nextAt = now + t.backoff * (0.5 + 0.5 * Math.random())
      const cap = now - t.failingSince > LONG_FAILURE_MS ? Math.max(this.o.maxBackoffMs, LONG_FAILURE_BACKOFF_MS) : this.o.maxBackoffMs
      t.backoff = Math.min(cap, t.backoff * 2)
      if (!t.failing) {
        const level = t.bootstrap ? 'warn' : 'debug'
        this.log[level]({ err, target: t.label }, 'cannot connect to peer; retrying with backoff')
      }
      t.failing = true
    } finally {
      t.inflight = false
    }
  }
}
