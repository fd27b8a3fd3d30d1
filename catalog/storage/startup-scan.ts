import type { DocId } from '../../schemas/catalog-records.js'
import { DocIdSchema, QuarantineRecordSchema, type QuarantineRecord } from '../../schemas/catalog-records.js'
import { type DocState, hashBytes, kindOf, type ViewRecord } from '../doc-registry.js'
import { prefixRange } from './keys.js'
import type { CatalogDb } from './level-db.js'

export interface ScanResult {
  states: DocState[]
  quarantined: QuarantineRecord[]
  /**
   * Documents whose view or bytes are unusable: to be quarantined with the reason given. `state` is set
   * when the view was readable, so that consumers can be told what disappears.
   */
  broken: Array<{ docId: DocId; reason: string; state?: DocState }>
}

function parseViewRecord(docId: DocId, value: Buffer): DocState {
  const raw = JSON.parse(value.toString('utf8')) as ViewRecord
  if (raw.v !== 1 || !Array.isArray(raw.heads) || typeof raw.docHash !== 'string') throw new Error('view record has an unknown layout')
  const kind = kindOf(docId)
  return {
    docId,
    kind,
    view: kind.deserialize(docId, raw.data),
    heads: raw.heads,
    durableHeads: raw.heads,
    docHash: raw.docHash,
    chgFirst: raw.chgFirst,
    chgNext: raw.chgNext,
    persisted: true,
    quarantined: false,
  }
}

/**
 * Start-up reads views, never Automerge documents (PERF-NOTES: views load 20× faster). The compacted bytes
 * are hashed against what their view recorded so that corruption is found now, not at the first change.
 */
export async function scanCatalog(db: CatalogDb): Promise<ScanResult> {
  const quarantined: QuarantineRecord[] = []
  for await (const value of db.values(prefixRange('quar/'))) {
    const parsed = QuarantineRecordSchema.safeParse(JSON.parse(value.toString('utf8')))
    if (parsed.success) quarantined.push(parsed.data)
  }
  const quarantinedIds = new Set(quarantined.map((q) => q.docId))

  const states = new Map<DocId, DocState>()
  const broken: ScanResult['broken'] = []
  for await (const [key, value] of db.iterator(prefixRange('view/'))) {
    const id = key.slice('view/'.length)
    const docId = DocIdSchema.safeParse(id)
    if (!docId.success) {
      broken.push({ docId: id as DocId, reason: `unknown document id "${id}"` })
      continue
    }
    if (quarantinedIds.has(docId.data)) continue
    try {
      states.set(docId.data, parseViewRecord(docId.data, value))
    } catch (err) {
      broken.push({ docId: docId.data, reason: `its view on disk is unreadable: ${(err as Error).message.split('\n')[0]}` })
    }
  }

  const withBytes = new Set<DocId>()
  for await (const [key, value] of db.iterator(prefixRange('doc/'))) {
    const docId = key.slice('doc/'.length) as DocId
    const state = states.get(docId)
    if (state === undefined) continue
    withBytes.add(docId)
    if (hashBytes(value) !== state.docHash) {
      states.delete(docId)
      broken.push({ docId, reason: 'its stored Automerge bytes do not match their checksum (corrupt on disk)', state })
    }
  }
  for (const docId of [...states.keys()]) {
    if (withBytes.has(docId)) continue
    broken.push({ docId, reason: 'its stored Automerge bytes are missing', state: states.get(docId) })
    states.delete(docId)
  }
  return { states: [...states.values()], quarantined, broken }
}
