import type { DocId } from '../schemas/catalog-records.js'

/**
 * The anti-entropy digest `{docId → heads}`. Two nodes first compare one hash of it: when a fleet is in sync
 * (nearly always) a sync round costs one small round trip instead of shipping every document's heads.
 */
export type Digest = ReadonlyMap<DocId, readonly string[]>

function headsKey(heads: readonly string[]): string {
  return [...heads].sort().join(',')
}

export function digestEntries(digest: Digest): Array<[DocId, string[]]> {
  return [...digest].map(([docId, heads]) => [docId, [...heads]])
}

/** Documents whose heads differ, or that only one side holds. */
export function differingDocs(mine: Digest, theirs: Digest): DocId[] {
  const out: DocId[] = []
  for (const [docId, heads] of mine) {
    const other = theirs.get(docId)
    if (other === undefined || headsKey(other) !== headsKey(heads)) out.push(docId)
  }
  for (const docId of theirs.keys()) if (!mine.has(docId)) out.push(docId)
  return out
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0
}

