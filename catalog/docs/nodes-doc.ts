import type { CatalogEventBody } from '../../schemas/catalog-events.js'
import { type NodeRecord, NodeRecordSchema } from '../../schemas/catalog-records.js'
import { json, readJson, str } from './automerge-values.js'
import type { DocKind, Touched } from './doc-kind.js'
import { sameJson } from './same-json.js'

/**
 * The membership document `nodes`: `nodes[name]` is that node's record as one JSON value, written only by
 * the node itself, so entries never conflict. Liveness is not written here (see gossip/membership).
 */
export interface NodesDocView {
  readonly nodes: ReadonlyMap<string, NodeRecord>
}

export const NODES_DOC_ID = 'nodes'

export function writeNodeRecord(d: Record<string, any>, record: NodeRecord): void { // eslint-disable-line @typescript-eslint/no-explicit-any
  d.nodes[record.name] = json(record)
}

function diffNode(prev: NodeRecord | undefined, next: NodeRecord | undefined): CatalogEventBody[] {
  if (next === undefined) return prev === undefined ? [] : [{ type: 'node.left', node: prev.name }]
  if (next.status === 'left') return prev === undefined || prev.status === 'left' ? [] : [{ type: 'node.left', node: next.name }]
  if (prev === undefined || prev.status === 'left') return [{ type: 'node.joined', node: next }]
  return sameJson(prev, next) ? [] : [{ type: 'node.updated', node: next }]
}

export const nodesDocKind: DocKind<NodesDocView> = {
  kind: 'nodes',
  rootFields: (docId) => ({ docId: str(docId), nodes: {} }),
  emptyView: () => ({ nodes: new Map() }),
  touchedBy(patches): Touched {
    const parts = new Set<string>()
    for (const p of patches) {
      if (p.path[0] !== 'nodes') continue
      if (p.path.length === 1) return 'all'
      parts.add(String(p.path[1]))
    }
    return parts
  },
  materialize(doc, _docId, previous, touched) {
    const raw = ((doc as Record<string, unknown>).nodes ?? {}) as Record<string, unknown>
    const names = touched === 'all' ? Object.keys(raw) : [...touched]
    const nodes = touched === 'all' ? new Map<string, NodeRecord>() : new Map(previous.nodes)
    for (const name of names) {
      if (raw[name] === undefined) nodes.delete(name)
      else nodes.set(name, NodeRecordSchema.parse(readJson(raw[name])))
    }
    return { nodes }
  },
  diff(previous, next, touched) {
    const names = touched === 'all' ? new Set([...previous.nodes.keys(), ...next.nodes.keys()]) : touched
    const events: CatalogEventBody[] = []
    for (const name of names) events.push(...diffNode(previous.nodes.get(name), next.nodes.get(name)))
    return events
  },
  serialize: (view) => ({ nodes: [...view.nodes.values()] }),
  deserialize(_docId, raw) {
    const nodes = new Map<string, NodeRecord>()
    for (const n of (raw as { nodes?: unknown[] }).nodes ?? []) {
      const rec = NodeRecordSchema.parse(n)
      nodes.set(rec.name, rec)
    }
    return { nodes }
  },
}
