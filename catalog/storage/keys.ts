import type { DocId } from '../../schemas/catalog-records.js'

/**
 * The LevelDB layout (DESIGN §2). Numbers are zero-padded so that key order is numeric order.
 *   doc/<id>            compacted Automerge bytes
 *   chg/<id>/<n>        changes since the last compaction
 *   view/<id>           the document's current plain view (JSON), written in the same batch
 *   evt/<seq>           the event log (JSON)
 *   meta/<name>         node-local facts (actor id, layout version)
 *   quar/<id>           why a document was set aside (JSON); its bytes move to qdoc/<id>, qchg/<id>/<n>
 */
const WIDTH = 16

export const pad = (n: number): string => String(n).padStart(WIDTH, '0')

export const KEYS = {
  doc: (id: DocId) => `doc/${id}`,
  chg: (id: DocId, n: number) => `chg/${id}/${pad(n)}`,
  chgPrefix: (id: DocId) => `chg/${id}/`,
  view: (id: DocId) => `view/${id}`,
  evt: (seq: number) => `evt/${pad(seq)}`,
  meta: (name: string) => `meta/${name}`,
  quar: (id: string) => `quar/${id}`,
  qdoc: (id: string) => `qdoc/${id}`,
  qchg: (id: string, n: number) => `qchg/${id}/${pad(n)}`,
} as const

/** Bounds for iterating every key that starts with `prefix`. */
export function prefixRange(prefix: string): { gte: string; lt: string } {
  return { gte: prefix, lt: prefix + '\xff' }
}
