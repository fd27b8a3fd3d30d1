import type { Connection, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import { GOSSIP_LIMITS } from '../schemas/gossip-messages.js'
import type { DigestWatch } from './digest-watch.js'
import { connectedPeerIds, type GossipLibp2p } from './libp2p-node.js'
import type { GossipCounters } from './stats.js'
import { SyncChannel, SyncProtocolError } from './sync-channel.js'
import { type SyncReplica, type SyncSessionResult, syncAsInitiator, syncAsResponder } from './sync-protocol.js'
import type { SyncRelay } from './sync-relay.js'
import { Throttle } from './throttle.js'

/**
 * When to sync, with whom, and how much to allow (DESIGN §3): with a peer as soon as it subscribes to the
 * changes topic (connect, reconnect after a partition), with a few random peers every interval, and on
 * demand (a change arrived whose dependencies we lack; a publish reached nobody). One session per peer at
 * a time; a request during a session runs once more after it. Inbound sessions are rate-limited per peer.
 */
export const SYNC_PROTOCOL = '/edgeproxy/sync/2'
const RETRIES = 4
const RETRY_BASE_MS = 150
const STOP_WAIT_MS = 2_000
/** A session put off behind one with a peer in the same state starts after this even if that one has not ended. */
const DEFER_MAX_MS = 2_000
/**
 * The interval round leaves a peer back from being away alone this long: its session on connect (started by
 * the smaller peer id, perhaps put off behind a twin for up to DEFER_MAX_MS) is the one that levels it, and
 * relays bring the rest. After a heal, interval sessions with returning peers only repeated those sessions.
 */
const RETURNING_QUIET_MS = 3_000

export interface AntiEntropyOptions {
  intervalMs: number
  /** Random peers synced each interval. */
  fanout: number
  sessionTimeoutMs: number
  frameTimeoutMs: number
  maxFrameBytes: number
  docsPerRound: number
  maxRoundsPerDoc: number
  /** Inbound sessions a peer may start: sustained rate and burst. */
  inboundPerSecond: number
  inboundBurst: number
}

export interface AntiEntropyDeps {
  libp2p: GossipLibp2p
  replica: SyncReplica
  log: Logger
  counters: GossipCounters
  /** What peers' heartbeats say of their digests: the interval round visits only peers that may differ. */
  digests: Pick<DigestWatch, 'mayDiffer' | 'level' | 'lastKnown' | 'awayTogether' | 'justReturned'>
  /** Passes on what a session brought when other peers may lack it. */
  relay: SyncRelay
}

export class AntiEntropy {
  private readonly running = new Map<string, Promise<void>>()
  private readonly again = new Set<string>()
  /** Peer → sessions put off until the session with that peer ends (see `twinOf`). */
  private readonly deferred = new Map<string, Map<string, string>>()
  private readonly inboundActive = new Map<string, number>()
  private readonly throttle: Throttle
  private readonly stopping = new AbortController()
  /** Retry and deferral timers, cleared on stop. */
  private readonly timers = new Set<NodeJS.Timeout>()
  /** Open sync streams, both directions, reset on stop. */
  private readonly streams = new Set<Stream>()
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly d: AntiEntropyDeps, private readonly o: AntiEntropyOptions) {
    this.throttle = new Throttle({ perSecond: o.inboundPerSecond, burst: o.inboundBurst })
  }

  async start(): Promise<void> {
    await this.d.libp2p.handle(SYNC_PROTOCOL, (stream, connection) => this.answer(stream, connection), {
      maxInboundStreams: 16,
      maxOutboundStreams: 16,
    })
    this.scheduleTick()
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    this.stopping.abort(new Error('gossip stopping'))
    // a stream's graceful close can wait on a stalled connection: reset them all, then wait a bounded time
    for (const stream of this.streams) stream.abort(new Error('gossip stopping'))
    const sessions = Promise.allSettled([...this.running.values()])
    let timer: NodeJS.Timeout | undefined
    const gaveUp = await Promise.race([sessions.then(() => false), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), STOP_WAIT_MS) })])
    clearTimeout(timer)
    if (gaveUp) this.d.log.warn({ peers: [...this.running.keys()] }, 'sync sessions did not end in time; stopping anyway')
    await this.d.libp2p.unhandle(SYNC_PROTOCOL).catch((err: unknown) => this.d.log.debug({ err }, 'unhandle sync protocol failed'))
  }

  /** Syncs with `peer` soon; coalesces with a session already running. */
  request(peer: string, reason: string, attempt = 0): void {
    if (this.stopping.signal.aborted) return
    if (this.running.has(peer)) { this.again.add(peer); return }
    const twin = attempt === 0 ? this.twinOf(peer) : undefined
    if (twin !== undefined) { this.defer(peer, twin, reason); return }
    const run = this.session(peer, reason).then((ok) => {
      this.running.delete(peer)
      this.releaseDeferred(peer)
      if (this.again.delete(peer)) this.request(peer, 'requested during the last session')
      else if (!ok) this.retry(peer, reason, attempt)
    })
    this.running.set(peer, run)
  }

  /**
   * A peer this node is already in a session with (either direction) that is likely in the same state as
   * `peer`: it last reported the same digest hash (before a disconnect too), or both went away together and
   * have not been synced with since (DigestWatch.awayTogether). A second session now would bring the same
   * documents over again. After a heal every node of one side connects to every node of the other at once,
   * and these duplicate sessions were most of the CPU the heal took; once the first ends, what it brought has
   * been relayed to that peer's side, and the put-off session (run then, or after DEFER_MAX_MS at the latest)
   * finds little or nothing left to do.
   */
  private twinOf(peer: string): string | undefined {
    const theirs = this.d.digests.lastKnown(peer)
    for (const other of [...this.running.keys(), ...this.inboundActive.keys()]) {
      if (other === peer) continue
      if (theirs !== undefined && this.d.digests.lastKnown(other) === theirs) return other
      if (this.d.digests.awayTogether(peer, other)) return other
    }
    return undefined
  }

  private defer(peer: string, twin: string, reason: string): void {
    let waiting = this.deferred.get(twin)
    if (waiting === undefined) {
      waiting = new Map()
      this.deferred.set(twin, waiting)
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        this.releaseDeferred(twin)
      }, DEFER_MAX_MS)
      timer.unref()
      this.timers.add(timer)
    }
    if (!waiting.has(peer)) this.d.counters.syncDeferred++
    waiting.set(peer, reason)
  }

  private releaseDeferred(twin: string): void {
    const waiting = this.deferred.get(twin)
    if (waiting === undefined) return
    this.deferred.delete(twin)
    for (const [peer, reason] of waiting) {
      if (connectedPeerIds(this.d.libp2p).has(peer)) this.request(peer, reason, 1)
    }
  }

  /**
   * A session that failed for a transient reason (a connection replaced during a simultaneous dial, a reset)
   * is retried a few times with backoff while the peer stays connected, rather than waiting for the interval.
   */
  private retry(peer: string, reason: string, attempt: number): void {
    if (attempt >= RETRIES || this.stopping.signal.aborted) return
    if (!connectedPeerIds(this.d.libp2p).has(peer)) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      this.request(peer, reason, attempt + 1)
    }, RETRY_BASE_MS * 2 ** attempt)
    timer.unref()
    this.timers.add(timer)
  }

  requestAll(reason: string): void {
    for (const p of connectedPeerIds(this.d.libp2p)) this.request(p, reason)
  }

  /** Runs one session with `peer` now and reports it (tests, admin). */
  async syncWith(peer: string): Promise<SyncSessionResult> {
    return await this.initiate(peer)
  }

  /** Resolves when no session this node started is running. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()])
  }

  private scheduleTick(): void {
    if (this.stopping.signal.aborted) return
    // ±20 % jitter so that a fleet started together does not sync in lock step
    const delay = this.o.intervalMs * (0.8 + Math.random() * 0.4)
    this.timer = setTimeout(() => {
      // an idle fleet, whose heartbeats all carry equal digest hashes, runs no sessions at all
      const peers = [...connectedPeerIds(this.d.libp2p)].filter((p) => this.d.digests.mayDiffer(p) && !this.d.digests.justReturned(p, RETURNING_QUIET_MS))
      for (const p of pickRandom(peers, this.o.fanout)) this.request(p, 'interval')
      this.scheduleTick()
    }, delay)
    this.timer.unref()
  }

  /** False when the session failed and may be retried. */
  private async session(peer: string, reason: string): Promise<boolean> {
    const started = performance.now()
    try {
      const r = await this.initiate(peer)
      if (!r.inSync) this.d.log.debug({ peer, reason, ...r, ms: Math.round(performance.now() - started) }, 'sync session done')
      if (r.peerLacks) this.again.add(peer)
      return r.failed === 0
    } catch (err) {
      if (this.stopping.signal.aborted) return true
      if (err instanceof SyncProtocolError) {
        this.d.counters.syncProtocolErrors++
        this.d.log.warn({ err, peer, reason }, 'peer broke the sync protocol; session dropped')
        return true // not retried: the next interval tries again
      }
      this.d.counters.syncFailed++
      this.d.log.debug({ err, peer, reason }, 'sync session failed')
      return false
    }
  }

  private async initiate(peer: string): Promise<SyncSessionResult> {
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.o.sessionTimeoutMs)])
    const stream = await this.d.libp2p.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal })
    this.d.counters.syncInitiated++
    this.streams.add(stream)
    try {
      const ch = new SyncChannel(stream, { maxFrameBytes: this.o.maxFrameBytes, frameTimeoutMs: this.o.frameTimeoutMs, signal })
      const r = await syncAsInitiator(ch, this.context(peer))
      this.account(r, peer)
      await stream.close({ signal }).catch(() => stream.abort(new Error('close failed')))
      return r
    } catch (err) {
      stream.abort(err as Error)
      throw err
    } finally {
      this.streams.delete(stream)
    }
  }

  private async answer(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const active = this.inboundActive.get(peer) ?? 0
    if (active >= 2 || !this.throttle.take(peer)) {
      this.d.counters.syncThrottled++
      stream.abort(new Error('sync throttled'))
      return
    }
    this.inboundActive.set(peer, active + 1)
    this.streams.add(stream)
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.o.sessionTimeoutMs)])
    try {
      const ch = new SyncChannel(stream, { maxFrameBytes: this.o.maxFrameBytes, frameTimeoutMs: this.o.frameTimeoutMs, signal })
      const r = await syncAsResponder(ch, { ...this.context(peer), maxDocs: GOSSIP_LIMITS.digestDocs })
      this.d.counters.syncAnswered++
      this.account(r, peer)
      if (r.peerLacks) this.request(peer, 'it pushed a document this node has written to since')
      await stream.close({ signal }).catch(() => stream.abort(new Error('close failed')))
    } catch (err) {
      if (err instanceof SyncProtocolError) {
        this.d.counters.syncProtocolErrors++
        this.d.log.warn({ err, peer }, 'peer broke the sync protocol; session dropped')
      } else if (!this.stopping.signal.aborted) {
        this.d.counters.syncFailed++
        this.d.log.debug({ err, peer }, 'answering a sync session failed')
      }
      stream.abort(err as Error)
    } finally {
      this.streams.delete(stream)
      const left = (this.inboundActive.get(peer) ?? 1) - 1
      if (left <= 0) {
        this.inboundActive.delete(peer)
        if (!this.running.has(peer)) this.releaseDeferred(peer)
      } else this.inboundActive.set(peer, left)
    }
  }

  private context(peer: string) {
    return {
      replica: this.d.replica,
      peer,
      log: this.d.log.child({ peer }),
      docsPerRound: this.o.docsPerRound,
      maxRoundsPerDoc: this.o.maxRoundsPerDoc,
      frameBudgetBytes: Math.floor(this.o.maxFrameBytes / 2),
      relay: this.d.relay.session(peer),
    }
  }

  private account(r: SyncSessionResult, peer: string): void {
    if (r.inSync) this.d.counters.syncInSync++
    this.d.counters.syncDocsConverged += r.converged
    this.d.counters.syncDocsPushed += r.pushed
    this.d.counters.syncDocsFailed += r.failed
    // what a session brought reaches peers that may lack it by broadcast (sync-relay.ts); a peer that still
    // lacks something reports a digest hash this node never held, and the interval round visits it
    if (r.failed === 0 && !r.peerLacks) this.d.digests.level(peer)
  }
}

function pickRandom<T>(items: T[], n: number): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j], copy[i]]
  }
  return copy.slice(0, n)
}
