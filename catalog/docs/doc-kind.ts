import type * as A from '@automerge/automerge'
import type { CatalogEventBody } from '../../schemas/catalog-events.js'
import type { DocId } from '../../schemas/catalog-records.js'

/** Which parts of a document a change touched: `all` after a load, or the keys Automerge's diff names. */
export type Touched = 'all' | ReadonlySet<string>

/**
 * One kind of catalog document (an app, the membership list, a certificate): how its deterministic root
 * looks, how its plain view is read from Automerge, and how two views differ as catalog events.
 */
export interface DocKind<V> {
  readonly kind: string
  /** Fields of the root change; identical on every node so replicas created apart can merge. */
  rootFields(docId: DocId): Record<string, unknown>
  emptyView(docId: DocId): V
  /** Keys of `touched` are part names as this kind understands them (e.g. `app`, `m:<id>`). */
  touchedBy(patches: A.Patch[]): Touched
  /** New view from the document; parts not touched are shared with `previous`. Throws on invalid data. */
  materialize(doc: A.Doc<unknown>, docId: DocId, previous: V, touched: Touched): V
  diff(previous: V, next: V, touched: Touched): CatalogEventBody[]
  /** Plain JSON for `view/<id>`, and back (validated: the disk is not trusted). */
  serialize(view: V): unknown
  deserialize(docId: DocId, raw: unknown): V
}
