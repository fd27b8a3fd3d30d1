import { createHash } from 'node:crypto'
import * as A from '@automerge/automerge'
import type { DocId } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { DigestHashAccumulator } from './digest-hash.js'
import { appDocKind } from './docs/app-doc.js'
import { certDocKind } from './docs/cert-doc.js'
import type { DocKind } from './docs/doc-kind.js'
import { nodesDocKind } from './docs/nodes-doc.js'
import { KEYS, prefixRange } from './storage/keys.js'
import type { CatalogDb } from './storage/level-db.js'

/** What the node knows of one document without loading it into Automerge. */
export interface DocState {
  readonly docId: DocId
  readonly kind: DocKind<unknown>
  view: unknown
  heads: string[]
  /** Heads as of the last durable batch (what digest() reports: peers must not see heads before events). */
  durableHeads: string[]
  /** sha256 of `doc/<id>`: a mismatch at start-up means the bytes on disk are corrupt. */
  docHash: string
  /** `chg/<id>/<n>` holds n in [chgFirst, chgNext). */
  chgFirst: number
  chgNext: number
  /** False until the first batch that writes it is durable. */
  persisted: boolean
  quarantined: boolean
}

/** The stored form of a DocState (`view/<id>`). */
export interface ViewRecord {
  v: 1
  heads: string[]
  docHash: string
  chgFirst: number
  chgNext: number
  data: unknown
}

export function kindOf(docId: DocId): DocKind<unknown> {
  if (docId.startsWith('app:')) return appDocKind as DocKind<unknown>
  if (docId.startsWith('cert:')) return certDocKind as DocKind<unknown>
  if (docId === 'nodes') return nodesDocKind as DocKind<unknown>
  throw new EdgeProxyError('EP_INVALID_REQUEST', `unknown document id "${docId}"`)
}

export const hashBytes = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

/** Loaded Automerge documents kept in memory; the rest stay as views until a change needs them. */
const LOADED_CAPACITY = 1024
const ROOT_ACTOR = '00'

export class DocRegistry {
  readonly states = new Map<DocId, DocState>()
  /** The digest hash, kept current per durable document (catalog/digest-hash.ts). */
  readonly digestHash = new DigestHashAccumulator()
  private readonly loaded = new Map<DocId, A.Doc<unknown>>()
  private readonly loading = new Map<DocId, Promise<A.Doc<unknown>>>()

  constructor(private readonly db: CatalogDb, readonly actor: string) {}

  /** A document every replica creates identically, so that replicas created apart share their root. */
  rootDoc(docId: DocId): A.Doc<unknown> {
    const kind = kindOf(docId)
    const root = A.change(A.init<Record<string, unknown>>({ actor: ROOT_ACTOR }), { time: 0 }, (d) => {
      Object.assign(d, kind.rootFields(docId))
    })
    const mine = A.clone(root, { actor: this.actor })
    A.free(root)
    return mine
  }

  /** An empty document (created for a peer's changes still on their way) given the root before a local write. */
  withRoot(docId: DocId, doc: A.Doc<unknown>): A.Doc<unknown> {
    const root = this.rootDoc(docId)
    const merged = A.merge(doc, root)
    A.free(root)
    this.remember(docId, merged)
    return merged
  }

  /** Brings the digest hash up to date with `state`'s durable heads (after a batch, or at open). */
  refreshDigest(state: DocState): void {
    this.digestHash.set(state.docId, state.persisted && !state.quarantined ? [...state.durableHeads].sort() : undefined)
  }

  /**
   * State of a document, created in memory (not yet persisted) when `create` is set: from the shared root
   * for a local write, empty for one that a peer's changes or sync fill (their history begins with that
   * root change, so building it here would be work thrown away: ~1.5 ms a document, much of a heal's CPU).
   */
  state(docId: DocId, create: false | 'root' | 'empty'): DocState | undefined {
    const existing = this.states.get(docId)
    if (existing !== undefined || create === false) return existing
    const kind = kindOf(docId)
    const doc = create === 'root' ? this.rootDoc(docId) : A.init<unknown>({ actor: this.actor })
    const state: DocState = {
      docId, kind, view: kind.emptyView(docId), heads: A.getHeads(doc), durableHeads: [], docHash: '', chgFirst: 0, chgNext: 0, persisted: false, quarantined: false,
    }
    this.states.set(docId, state)
    this.remember(docId, doc)
    return state
  }

  async load(state: DocState): Promise<A.Doc<unknown>> {
    const cached = this.loaded.get(state.docId)
    if (cached !== undefined) {
      this.loaded.delete(state.docId) // refresh LRU position
      this.loaded.set(state.docId, cached)
      return cached
    }
    let pending = this.loading.get(state.docId)
    if (pending === undefined) {
      pending = this.readFromDisk(state).finally(() => this.loading.delete(state.docId))
      this.loading.set(state.docId, pending)
    }
    return pending
  }

  private async readFromDisk(state: DocState): Promise<A.Doc<unknown>> {
    if (!state.persisted) return this.rootDoc(state.docId)
    const bytes = await this.db.get(KEYS.doc(state.docId))
    if (bytes === undefined) throw new Error(`doc/${state.docId} is missing`)
    let doc = A.load<unknown>(new Uint8Array(bytes), { actor: this.actor })
    const changes: Uint8Array[] = []
    for await (const value of this.db.values(prefixRange(KEYS.chgPrefix(state.docId)))) changes.push(new Uint8Array(value))
    if (changes.length > 0) [doc] = A.applyChanges(doc, changes)
    const heads = A.getHeads(doc).sort()
    if (heads.join() !== [...state.heads].sort().join()) {
      throw new Error(`stored changes of ${state.docId} do not reach the heads its view records`)
    }
    // another load may have finished first while this one read the disk
    const raced = this.loaded.get(state.docId)
    if (raced !== undefined) {
      A.free(doc)
      return raced
    }
    this.remember(state.docId, doc)
    return doc
  }

  /** Replaces the loaded copy (after a change); the old handle is outdated by Automerge already. */
  remember(docId: DocId, doc: A.Doc<unknown>): void {
    this.loaded.delete(docId)
    this.loaded.set(docId, doc)
    while (this.loaded.size > LOADED_CAPACITY) {
      const [oldest, oldDoc] = this.loaded.entries().next().value as [DocId, A.Doc<unknown>]
      this.loaded.delete(oldest)
      A.free(oldDoc)
    }
  }

  /** Drops the loaded copy; the next change reloads it from disk (used after a failed batch). */
  forget(docId: DocId): void {
    const doc = this.loaded.get(docId)
    this.loaded.delete(docId)
    if (doc !== undefined) A.free(doc)
  }

  /** The loaded copy, if any, without touching its LRU position. */
  current(docId: DocId): A.Doc<unknown> | undefined {
    return this.loaded.get(docId)
  }

  isLoaded(docId: DocId): boolean {
    return this.loaded.has(docId)
  }

  freeAll(): void {
    for (const doc of this.loaded.values()) A.free(doc)
    this.loaded.clear()
  }
}

export function toViewRecord(state: DocState): ViewRecord {
  return { v: 1, heads: state.heads, docHash: state.docHash, chgFirst: state.chgFirst, chgNext: state.chgNext, data: state.kind.serialize(state.view) }
}
