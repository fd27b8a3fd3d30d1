import * as A from '@automerge/automerge'
import type { Logger } from 'pino'
import type { CatalogEvent, CatalogEventBody } from '../schemas/catalog-events.js'
import type { DocId } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { changeHeader } from './change-header.js'
import { nodeOfActor } from './docs/automerge-values.js'
import { type DocRegistry, type DocState, hashBytes, toViewRecord } from './doc-registry.js'
import type { EventLog } from './event-log.js'
import { KEYS, prefixRange } from './storage/keys.js'
import { type BatchOp, type CatalogDb, del, putBytes, putJson } from './storage/level-db.js'

/** Fold `chg/` into `doc/` once a document has this many separate changes (PERF-NOTES: load time). */
export const COMPACT_AFTER_CHANGES = 64
/** Ops written in one LevelDB batch (group commit); bounded so the loaded-doc cache never evicts mid-group. */
const MAX_GROUP = 256
/**
 * Background ops per group: each costs ~1 ms to stage (a small pushed document), during which nothing else runs,
 * so an urgent op (a sync round) waits behind at most ~30 ms of them. Fewer per group meant more groups, each
 * waiting for its own batch write: in a 20-process heal, where a batch took 0.1–1 s to come back, eight per group
 * made a session's 20 pushed documents four writes in a row (the first alone: an idle pipeline starts at once).
 */
export const BACKGROUND_PER_GROUP = 32

export type WritePriority = 'urgent' | 'normal' | 'background'

export interface OpResult {
  events: CatalogEvent[]
  /** New Automerge changes this op added to its document. */
  changes: Uint8Array[]
  missingDeps: boolean
}

/** Changes one document. Runs synchronously on a private copy; throwing leaves the catalog untouched. */
export interface ChangeOp {
  type: 'change'
  docId: DocId
  /** Create the document (from its deterministic root) when this node does not hold it. */
  create: boolean
  /** Create it empty rather than from its root: what the op applies brings the root change (a sync, a push). */
  startEmpty?: boolean
  /** Set for changes from a peer: they may be poison, which is refused (the document stays as it was). */
  fromPeer?: string
  run(doc: A.Doc<unknown>, state: DocState): A.Doc<unknown>
}
export interface DerivedOp { type: 'derived'; bodies: CatalogEventBody[] }
export interface QuarantineOp { type: 'quarantine'; docId: DocId; reason: string }
export type Op = ChangeOp | DerivedOp | QuarantineOp

interface Queued {
  op: Op
  resolve: (r: OpResult) => void
  reject: (err: unknown) => void
  quarantineBytes?: { doc: Buffer | undefined; chg: Array<[string, Buffer]> }
  prepareError?: unknown
}

interface Staged {
  q: Queued
  result: OpResult
  localChanges?: { docId: DocId; changes: Uint8Array[] }
}

export interface PipelineHooks {
  /** Events are durable: update read models, in seq order. */
  published(events: CatalogEvent[]): void
  localChanges(docId: DocId, changes: Uint8Array[]): void
}

const EMPTY: OpResult = { events: [], changes: [], missingDeps: false }

/**
 * Every write goes through here, one group at a time: ops queued while a batch is being written form the
 * next batch (group commit). Each op's Automerge changes, its view and its events land in one atomic
 * LevelDB batch; subscribers hear of the events only after that batch is durable.
 */
export class WritePipeline {
  private readonly queue: Queued[] = []
  /** Ops someone waits on across the network (a sync round): the next group is theirs alone. */
  private readonly urgent: Queued[] = []
  /** Bulk catch-up (a sync session's pushed documents): a few ride along with each group. */
  private readonly background: Queued[] = []
  private running: Promise<void> | undefined
  private closed = false

  constructor(
    private readonly db: CatalogDb,
    private readonly registry: DocRegistry,
    private readonly events: EventLog,
    private readonly nodeName: string,
    private readonly hooks: PipelineHooks,
    private readonly log: Logger,
    private readonly sync: boolean,
  ) {}

  /**
   * Queues an op. `urgent` ones skip the queue: a sync round trip waits on each of them. `background` ones go
   * BACKGROUND_PER_GROUP at a time, so that a session pushing hundreds of documents does not hold the event
   * loop for one long group while a round message or a local write waits behind it. Ops on one document may
   * then apply out of submission order; remote changes commute (Automerge), and local writes are `normal`.
   */
  submit(op: Op, priority: WritePriority = 'normal'): Promise<OpResult> {
    if (this.closed) return Promise.reject(new EdgeProxyError('EP_CATALOG_CLOSED', 'the catalog is closed'))
    return new Promise((resolve, reject) => {
      const lane = priority === 'urgent' ? this.urgent : priority === 'background' ? this.background : this.queue
      lane.push({ op, resolve, reject })
      this.kick()
    })
  }

  private get pending(): number {
    return this.urgent.length + this.queue.length + this.background.length
  }

  private nextGroup(): Queued[] {
    if (this.urgent.length > 0) return this.urgent.splice(0, MAX_GROUP)
    return [...this.queue.splice(0, MAX_GROUP), ...this.background.splice(0, BACKGROUND_PER_GROUP)]
  }

  /**
   * Starts a drain unless one runs. An op can be queued after a drain's last look at the queue but before its
   * promise settles (a caller resuming on the previous op's result gets there first): the drain's end looks
   * again, so that op is not left waiting for the next write to come along.
   */
  private kick(): void {
    if (this.running !== undefined || this.pending === 0) return
    this.running = this.drain().finally(() => {
      this.running = undefined
      this.kick()
    })
  }

  /** Waits for queued writes, then refuses new ones. */
  async close(): Promise<void> {
    this.closed = true
    while (this.running !== undefined) await this.running
  }

  private async drain(): Promise<void> {
    while (this.pending > 0) {
      const group = this.nextGroup()
      await Promise.all(group.map((q) => this.prepare(q)))
      await this.commit(group)
    }
  }

  private async prepare(q: Queued): Promise<void> {
    try {
      if (q.op.type === 'change') {
        const state = this.registry.state(q.op.docId, !q.op.create ? false : q.op.startEmpty === true ? 'empty' : 'root')
        if (state !== undefined && !state.quarantined) await this.registry.load(state)
      } else if (q.op.type === 'quarantine') {
        const chg: Array<[string, Buffer]> = []
        for await (const entry of this.db.iterator(prefixRange(KEYS.chgPrefix(q.op.docId)))) chg.push(entry)
        q.quarantineBytes = { doc: await this.db.get(KEYS.doc(q.op.docId)), chg }
      }
    } catch (err) {
      q.prepareError = err
    }
  }

  private async commit(group: Queued[]): Promise<void> {
    const batch: BatchOp[] = []
    const staged: Staged[] = []
    const before = new Map<DocId, { state: DocState; copy: DocState; existed: boolean }>()
    const remember = (state: DocState, existed: boolean): void => {
      if (!before.has(state.docId)) before.set(state.docId, { state, copy: { ...state }, existed })
    }
    const now = Date.now()

    for (const q of group) {
      try {
        if (q.prepareError !== undefined) throw q.prepareError
        const result = this.stage(q, batch, remember, now)
        staged.push({ q, result: result.result, localChanges: result.localChanges })
      } catch (err) {
        q.reject(err)
      }
    }

    // one view per touched document, however many ops of the group changed it
    for (const { state } of before.values()) {
      if (!state.quarantined) batch.push(putJson(KEYS.view(state.docId), toViewRecord(state)))
    }

    if (batch.length > 0) {
      try {
        await this.db.batch(batch, { sync: this.sync })
      } catch (err) {
        this.log.error({ err }, 'catalog batch write failed; the changes of this batch are rejected')
        this.events.rollback()
        for (const { state, copy, existed } of before.values()) {
          Object.assign(state, copy)
          this.registry.forget(state.docId)
          if (!existed) this.registry.states.delete(state.docId)
        }
        const failure = new EdgeProxyError('EP_INTERNAL', 'the catalog could not write to its data directory; see the node log', { cause: err })
        for (const s of staged) s.q.reject(failure)
        return
      }
    }

    for (const { state } of before.values()) {
      state.persisted = state.persisted || !state.quarantined
      state.durableHeads = state.heads
      this.registry.refreshDigest(state)
    }
    const published = staged.flatMap((s) => s.result.events)
    try {
      this.hooks.published(published)
    } catch (err) {
      this.log.error({ err }, 'publishing catalog events failed')
    }
    for (const s of staged) {
      s.q.resolve(s.result)
      if (s.localChanges !== undefined && s.localChanges.changes.length > 0) {
        try {
          this.hooks.localChanges(s.localChanges.docId, s.localChanges.changes)
        } catch (err) {
          this.log.error({ err }, 'a local-change listener threw')
        }
      }
    }
  }

  private stage(
    q: Queued,
    batch: BatchOp[],
    remember: (state: DocState, existed: boolean) => void,
    now: number,
  ): { result: OpResult; localChanges?: { docId: DocId; changes: Uint8Array[] } } {
    const op = q.op
    if (op.type === 'derived') {
      const { events, ops } = this.events.assign(op.bodies, this.nodeName, now)
      batch.push(...ops)
      return { result: { ...EMPTY, events } }
    }
    if (op.type === 'quarantine') return { result: this.stageQuarantine(op, q, batch, remember, now) }

    const state = this.registry.states.get(op.docId)
    if (state === undefined) throw new EdgeProxyError('EP_NOT_FOUND', `document ${op.docId} does not exist on this node`)
    if (state.quarantined) throw new EdgeProxyError('EP_DOC_QUARANTINED', `document ${op.docId} is quarantined; see \`edgeproxy catalog quarantine\``)
    // an earlier op of this group may have replaced the loaded copy: always take the current one
    let doc = this.registry.current(op.docId)
    if (doc === undefined) throw new EdgeProxyError('EP_INTERNAL', `document ${op.docId} was not loaded`)

    const beforeHeads = A.getHeads(doc)
    const remote = op.fromPeer !== undefined
    if (!remote && beforeHeads.length === 0) doc = this.registry.withRoot(op.docId, doc)
    // A peer's change may be poison: work on a copy so that the loaded document stays good. Local changes
    // were validated before they were queued, so they change the document in place (a copy costs O(doc)).
    const work = remote ? A.clone(doc, { actor: this.registry.actor }) : doc
    let next: A.Doc<unknown>
    let view: unknown
    let touched
    let fresh: Uint8Array[]
    try {
      next = op.run(work, state)
      fresh = A.getChangesSince(next, beforeHeads)
      if (fresh.length === 0) {
        const missingDeps = A.getMissingDeps(next, []).length > 0
        if (remote && missingDeps) {
          // nothing applied, but the copy queues changes that wait for their dependencies: keep it, so the
          // sync that brings those dependencies applies them too (they are validated then, when applied)
          this.registry.remember(op.docId, next)
          A.free(doc)
        } else if (remote) A.free(next)
        else this.registry.remember(op.docId, next)
        return { result: { ...EMPTY, missingDeps } }
      }
      touched = state.kind.touchedBy(A.diff(next, beforeHeads, A.getHeads(next)))
      view = state.kind.materialize(next, op.docId, state.view, touched)
    } catch (err) {
      if (!remote) {
        // a bug, not bad input: the loaded copy may hold part of the change, so reload it from disk later
        this.registry.forget(op.docId)
        throw err
      }
      try { A.free(work) } catch { /* already consumed by the failed change */ }
      // Poison: the change only ever touched the copy, so the document is still good and keeps being served.
      // Quarantining it instead would let one bad message from one peer take an app off this node for good
      // (issue 11: poison is dropped and counted, every node keeps routing).
      this.log.warn({ err, docId: op.docId, peer: op.fromPeer }, 'poison change refused; the document is unchanged')
      throw new EdgeProxyError('EP_GOSSIP_MESSAGE_INVALID', `change from ${op.fromPeer} to ${op.docId} refused: ${(err as Error).message}`, { cause: err })
    }

    const bodies = state.kind.diff(state.view, view, touched)
    const origin = op.fromPeer === undefined ? this.nodeName : nodeOfActor(changeHeader(fresh[fresh.length - 1]).actor)
    const { events, ops } = this.events.assign(bodies, origin, now)

    remember(state, state.persisted)
    this.stageDocBytes(state, next, fresh, batch)
    state.view = view
    state.heads = A.getHeads(next)
    batch.push(...ops)

    this.registry.remember(op.docId, next)
    if (remote) A.free(doc)
    const missingDeps = A.getMissingDeps(next, []).length > 0
    return {
      result: { events, changes: fresh, missingDeps },
      localChanges: op.fromPeer === undefined ? { docId: op.docId, changes: fresh } : undefined,
    }
  }

  private stageDocBytes(state: DocState, next: A.Doc<unknown>, fresh: Uint8Array[], batch: BatchOp[]): void {
    const pendingChanges = state.chgNext - state.chgFirst + fresh.length
    if (!state.persisted || pendingChanges > COMPACT_AFTER_CHANGES) {
      const bytes = A.save(next)
      batch.push(putBytes(KEYS.doc(state.docId), bytes))
      for (let n = state.chgFirst; n < state.chgNext; n++) batch.push(del(KEYS.chg(state.docId, n)))
      state.chgFirst = state.chgNext
      state.docHash = hashBytes(bytes)
      return
    }
    for (const change of fresh) batch.push(putBytes(KEYS.chg(state.docId, state.chgNext++), change))
  }

  private stageQuarantine(op: QuarantineOp, q: Queued, batch: BatchOp[], remember: (s: DocState, existed: boolean) => void, now: number): OpResult {
    const state = this.registry.states.get(op.docId)
    const bodies: CatalogEventBody[] = []
    if (state !== undefined && !state.quarantined) {
      remember(state, state.persisted)
      bodies.push(...state.kind.diff(state.view, state.kind.emptyView(op.docId), 'all'))
      state.view = state.kind.emptyView(op.docId)
      state.quarantined = true
      this.registry.forget(op.docId)
    }
    bodies.push({ type: 'catalog.quarantined', docId: op.docId, reason: op.reason })
    const bytes = q.quarantineBytes
    batch.push(putJson(KEYS.quar(op.docId), { docId: op.docId, reason: op.reason, at: now }))
    if (bytes?.doc !== undefined) batch.push(putBytes(KEYS.qdoc(op.docId), bytes.doc), del(KEYS.doc(op.docId)))
    for (const [key, value] of bytes?.chg ?? []) {
      batch.push(putBytes(KEYS.qchg(op.docId, Number(key.slice(key.lastIndexOf('/') + 1))), value), del(key))
    }
    batch.push(del(KEYS.view(op.docId)))
    const { events, ops } = this.events.assign(bodies, this.nodeName, now)
    batch.push(...ops)
    return { ...EMPTY, events }
  }
}
