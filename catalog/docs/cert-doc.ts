import { type CertRecord, CertRecordSchema } from '../../schemas/catalog-records.js'
import { json, readJson, str } from './automerge-values.js'
import type { DocKind } from './doc-kind.js'
import { sameJson } from './same-json.js'

/** One document per hostname, `cert:<host>`: the certificate the tls handler serves for that SNI. */
export interface CertDocView {
  readonly cert: CertRecord | undefined
}

export const certDocId = (hostname: string): `cert:${string}` => `cert:${hostname}`

export function writeCert(d: Record<string, any>, cert: CertRecord | undefined): void { // eslint-disable-line @typescript-eslint/no-explicit-any
  d.cert = cert === undefined ? null : json(cert)
}

export const certDocKind: DocKind<CertDocView> = {
  kind: 'cert',
  rootFields: (docId) => ({ docId: str(docId), cert: null }),
  emptyView: () => ({ cert: undefined }),
  touchedBy: () => 'all',
  materialize(doc) {
    const raw = (doc as Record<string, unknown>).cert
    return { cert: raw === null || raw === undefined ? undefined : CertRecordSchema.parse(readJson(raw)) }
  },
  diff(previous, next, _touched) {
    if (next.cert === undefined) return previous.cert === undefined ? [] : [{ type: 'cert.removed', hostname: previous.cert.hostname }]
    return sameJson(previous.cert, next.cert) ? [] : [{ type: 'cert.upserted', cert: next.cert }]
  },
  serialize: (view) => ({ cert: view.cert ?? null }),
  deserialize: (_docId, raw) => {
    const c = (raw as { cert?: unknown }).cert
    return { cert: c === null || c === undefined ? undefined : CertRecordSchema.parse(c) }
  },
}
