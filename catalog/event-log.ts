import type { Logger } from 'pino'
import { type CatalogEvent, type CatalogEventBody, CatalogEventSchema } from '../schemas/catalog-events.js'
import { EdgeProxyError } from '../schemas/errors.js'
import type { SubscribeOptions, Subscription } from './catalog-api.js'
import { KEYS, pad } from './storage/keys.js'
import { type BatchOp, type CatalogDb, putJson } from './storage/level-db.js'

/** Recent events kept in memory so that a subscriber catching up from near the end never reads the disk. */
const RECENT_CAPACITY = 8192

type Listener = (event: CatalogEvent) => void

interface LiveSubscriber {
  next: number
  /** Live events that arrived while the log was being replayed; delivered once the replay is done. */
  pending: CatalogEvent[] | undefined
  closed: boolean
  listener: Listener
}

/**
 * The append-only event log: seqs are assigned while a write batch is built, events become visible to
 * subscribers only once that batch is durable, and `subscribe({fromSeq})` joins the replayed part of the
 * log and the live part with no gap and no duplicate.
 */
export class EventLog {
  private assigned: number
  private published: number
  private readonly recent: CatalogEvent[] = []
  private readonly subscribers = new Set<LiveSubscriber>()

  constructor(private readonly db: CatalogDb, lastSeq: number, private readonly log: Logger) {
    this.assigned = lastSeq
    this.published = lastSeq
  }

  get lastSeq(): number {
    return this.published
  }

  static async readLastSeq(db: CatalogDb): Promise<number> {
    for await (const key of db.keys({ gte: 'evt/', lt: 'evt/\xff', reverse: true, limit: 1 })) return Number(key.slice(4))
    return 0
  }

  /** Gives bodies their seqs and returns the events plus the batch operations that persist them. */
  assign(bodies: CatalogEventBody[], origin: string, ts: number): { events: CatalogEvent[]; ops: BatchOp[] } {
    const events = bodies.map((body) => ({ ...body, seq: ++this.assigned, ts, origin }) as CatalogEvent)
    return { events, ops: events.map((e) => putJson(KEYS.evt(e.seq), e)) }
  }

  /** The batch that held assigned events failed: forget them. */
  rollback(): void {
    this.assigned = this.published
  }

  /** The batch is durable: deliver to live subscribers in seq order. */
  publish(events: CatalogEvent[]): void {
    for (const e of events) {
      if (e.seq !== this.published + 1) throw new EdgeProxyError('EP_EVENT_GAP', `event log would skip from ${this.published} to ${e.seq}`)
      this.published = e.seq
      this.recent.push(e)
      for (const sub of this.subscribers) this.offer(sub, e)
    }
    if (this.recent.length > RECENT_CAPACITY * 1.5) this.recent.splice(0, this.recent.length - RECENT_CAPACITY)
  }

  subscribe(options: SubscribeOptions, listener: Listener): Subscription {
    const fromSeq = options.fromSeq ?? this.published + 1
    if (!Number.isInteger(fromSeq) || fromSeq < 1) throw new EdgeProxyError('EP_INVALID_REQUEST', `fromSeq must be a positive integer, got ${fromSeq}`)
    const sub: LiveSubscriber = { next: fromSeq, pending: undefined, closed: false, listener }
    this.subscribers.add(sub)
    const close = (): void => {
      sub.closed = true
      this.subscribers.delete(sub)
    }
    if (fromSeq <= this.published) {
      sub.pending = []
      this.replayInto(sub, this.published).catch((err: unknown) => {
        this.log.error({ err, fromSeq }, 'event replay for a subscriber failed; subscription closed')
        close()
      })
    }
    return { close }
  }

  private async replayInto(sub: LiveSubscriber, upTo: number): Promise<void> {
    for await (const e of this.readEvents(sub.next, upTo)) {
      if (sub.closed) return
      this.deliver(sub, e)
    }
    const pending = sub.pending ?? []
    sub.pending = undefined
    for (const e of pending) if (!sub.closed) this.deliver(sub, e)
  }

  private offer(sub: LiveSubscriber, e: CatalogEvent): void {
    if (sub.closed) return
    if (sub.pending !== undefined) sub.pending.push(e)
    else this.deliver(sub, e)
  }

  private deliver(sub: LiveSubscriber, e: CatalogEvent): void {
    if (e.seq < sub.next) return // already delivered by the replay
    if (e.seq > sub.next) {
      this.log.error({ expected: sub.next, got: e.seq }, 'subscriber missed events; subscription closed')
      sub.closed = true
      this.subscribers.delete(sub)
      return
    }
    sub.next = e.seq + 1
    try {
      sub.listener(e)
    } catch (err) {
      this.log.error({ err, seq: e.seq, type: e.type }, 'catalog event listener threw; subscription closed')
      sub.closed = true
      this.subscribers.delete(sub)
    }
  }

  /** Events in [fromSeq, toSeq] (toSeq defaults to the newest durable one), validated on the way in. */
  async *readEvents(fromSeq: number, toSeq: number = this.published): AsyncIterable<CatalogEvent> {
    let seq = fromSeq
    while (seq <= toSeq) {
      const oldestRecent = this.recent.length > 0 ? this.recent[0].seq : this.published + 1
      if (seq >= oldestRecent) {
        // the ring may be trimmed while the consumer awaits: look the event up afresh each time
        const event = this.recent[seq - oldestRecent]
        if (event === undefined) return
        seq++
        yield event
        continue
      }
      const upTo = Math.min(toSeq, oldestRecent - 1)
      for await (const [key, value] of this.db.iterator({ gte: KEYS.evt(seq), lte: KEYS.evt(upTo) })) {
        const event = parseStoredEvent(key, value)
        if (event.seq !== seq) throw new EdgeProxyError('EP_EVENT_GAP', `event log has a hole: expected seq ${seq}, found ${event.seq}`)
        seq++
        yield event
      }
      if (seq <= upTo) throw new EdgeProxyError('EP_EVENT_TRUNCATED', `event log ends at seq ${seq - 1}, before ${upTo}`)
    }
  }

  close(): void {
    for (const sub of this.subscribers) sub.closed = true
    this.subscribers.clear()
  }
}

export function parseStoredEvent(key: string, value: Buffer): CatalogEvent {
  const parsed = CatalogEventSchema.safeParse(JSON.parse(value.toString('utf8')))
  if (!parsed.success) {
    throw new EdgeProxyError('EP_INTERNAL', `stored event ${key} is invalid: ${parsed.error.issues[0]?.message ?? 'unknown'}`)
  }
  return parsed.data
}

export { pad }
