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
 * unreachable peers share a budget (see `redialFailing`): small while the node is cut off (`probing`), so that the
 * fleet as a whole finds a healed cut within a fraction of a second, and `redialsPerSecond` once a peer is back.
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
  /**
   * While this node is cut off and none of its unreachable peers has come back yet, its redials are this fleet-wide
   * rate divided by the fleet's size (at most `redialsPerSecond`): see `probing`.
   */
  fleetProbesPerSecond: number
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
 * When an unreachable peer comes back after HEAL_AFTER_MS while FREE_FAILING others or more are still unreachable,
 * and none came back in the last RESTORING_MS, a partition has most likely healed: the budgeted redials stop for this
 * long. One link across is what levels the catalogs (its session on connect, then relays over the links that never
 * broke); at a 10 | 10 heal of 20 processes on two cores the other ~100 handshakes took the CPU that work needed.
 * The redials that follow the pause succeed, so the rest of the links come back at the budget's pace without pausing
 * again. (It took four failed redials since the last return before; in the benchmark's 2 s partitions a node with a
 * large peer id, which leaves most of its peers to dial it, never got to four and never paused.)
 */
const HEAL_PAUSE_MS = 2_500
/** A peer that comes back after being unreachable at least this long, while others still are, ends a partition. */
const HEAL_AFTER_MS = 1_000
/**
 * After a peer came back, the redials are at the full budget (restoring) until no other has come back for this long,
 * a peer that was reachable fails, or this node is no longer cut off; then it probes again. Longer than HEAL_PAUSE_MS,
 * so that the pause is followed by restoring.
 */
const RESTORING_MS = 10_000
/** The least probing rate per node, however large the fleet: a node cut off on its own still finds its way back. */
const MIN_PROBES_PER_SECOND = 0.1

/** A budget of redials: `perSecond` for peers this node dials, ANSWER_SHARE of it for peers that dial this node. */
class RedialBudget {
  private readonly ours: Throttle
  private readonly answers: Throttle
  constructor(readonly perSecond: number) {
    this.ours = new Throttle({ perSecond, burst: Math.max(1, perSecond) })
    this.answers = new Throttle({ perSecond: perSecond * ANSWER_SHARE, burst: 1 })
  }

  take(leftToThem: boolean): boolean {
    return (leftToThem ? this.answers : this.ours).take(REDIAL_BUCKET)
  }
}

export class PeerDialer {
  private readonly targets = new Map<string, Target>()
  private timer: NodeJS.Timeout | undefined
  private readonly stopping = new AbortController()
  /** The budget once a peer has come back (restoring): `redialsPerSecond`, at most one second's worth at once. */
  private readonly restoringBudget: RedialBudget
  /** The budget while probing; rebuilt when the fleet's size changes it. */
  private probingBudget: RedialBudget | undefined
  /** performance.now() until which budgeted redials wait (HEAL_PAUSE_MS). */
  private redialsPausedUntil = 0
  /** performance.now() of the last time a failing peer came back. */
  private lastReturnAt = -Infinity

  constructor(
    private readonly libp2p: GossipLibp2p,
    private readonly log: Logger,
    private readonly counters: GossipCounters,
    private readonly o: PeerDialerOptions,
  ) {
    this.restoringBudget = new RedialBudget(o.redialsPerSecond)
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
    if (failing <= FREE_FAILING) this.lastReturnAt = -Infinity // no longer cut off: the next cut starts probing
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
    if (due.length === 0) return
    const now = performance.now()
    const budgeted = failing > FREE_FAILING
    if (budgeted && now < this.redialsPausedUntil) return
    const budget = budgeted ? (this.restoring(now) ? this.restoringBudget : this.probing()) : undefined
    if (budget !== undefined) due.sort((a, b) => a.nextAt - b.nextAt)
    for (const t of due) {
      if (budget !== undefined && !budget.take(this.leftToThem(t))) continue
      void this.dial(t)
    }
  }

  private restoring(now: number): boolean { return now - this.lastReturnAt < RESTORING_MS }

  /**
   * The budget of a node cut off from a part of the fleet before any of those peers came back. Every node on both
   * sides of a cut probes, so one link across comes back at the fleet's rate whatever each node's share; with the
   * per-node budget a healed 10 | 10 cut of 20 nodes got 10–13 links back in its first 0.4 s, one or two per node
   * before each node's own return paused it, and those handshakes took the CPU that the first session and the
   * relays needed. Its size: `fleetProbesPerSecond` over the nodes this node knows, within
   * [MIN_PROBES_PER_SECOND, redialsPerSecond].
   */
  private probing(): RedialBudget {
    let fleet = 1
    for (const t of this.targets.values()) if (!t.bootstrap) fleet++
    const perSecond = Math.min(this.o.redialsPerSecond, Math.max(MIN_PROBES_PER_SECOND, this.o.fleetProbesPerSecond / fleet))
    if (this.probingBudget?.perSecond !== perSecond) this.probingBudget = new RedialBudget(perSecond)
    return this.probingBudget
  }

  /** A failing target is connected again, by either side's dial. */
  private returned(t: Target, now: number): void {
    t.failing = false
    this.log.info({ target: t.label }, 'peer reachable again')
    let stillFailing = 0
    for (const other of this.targets.values()) if (other.failing) stillFailing++
    if (stillFailing < FREE_FAILING) return // a node down and back, not a cut
    // the first return from a cut, not one of the returns that follow it
    if (!this.restoring(now) && now - t.failingSince >= HEAL_AFTER_MS) {
      this.redialsPausedUntil = now + HEAL_PAUSE_MS
      this.counters.redialPauses++
    }
    this.lastReturnAt = now
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
      const now = performance.now()
      if (!t.failing) {
        t.failingSince = now
        // a link lost while restoring may be a new cut (the bench cuts again right after a heal): probe, and pause
        // at its heal
        this.lastReturnAt = -Infinity
      }
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
