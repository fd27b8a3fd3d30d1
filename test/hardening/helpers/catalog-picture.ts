import { waitFor } from '../../helpers/wait-for.js'
import { getJson } from './daemon-fleet.js'

/**
 * A node's catalog as its admin API shows it: the heads of every document (`GET /v1/catalog`) and the
 * records each document materializes to (`GET /v1/catalog/docs/:id`). Two nodes hold the same catalog when
 * both are equal: same history (heads) and same state (records).
 */
export interface CatalogPicture {
  seq: number
  heads: Record<string, string[]>
  records: Record<string, unknown>
}

export async function catalogHeads(api: string): Promise<{ seq: number; heads: Record<string, string[]> }> {
  const c = await getJson<{ seq: number; docs: Record<string, string[]> }>(`${api}/v1/catalog`)
  return { seq: c.seq, heads: sortKeys(c.docs) }
}

export async function catalogPicture(api: string): Promise<CatalogPicture> {
  const { seq, heads } = await catalogHeads(api)
  const records: Record<string, unknown> = {}
  for (const docId of Object.keys(heads)) {
    const doc = await getJson<{ heads?: unknown; machines?: Array<{ id: string }>; nodes?: Array<{ name: string }> }>(`${api}/v1/catalog/docs/${encodeURIComponent(docId)}`)
    delete doc.heads // compared above; a change between the two reads would show there, not here
    if (doc.machines !== undefined) doc.machines.sort((a, b) => a.id.localeCompare(b.id))
    if (doc.nodes !== undefined) doc.nodes.sort((a, b) => a.name.localeCompare(b.name))
    records[docId] = doc
  }
  return { seq, heads, records }
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)))
}

const key = (h: Record<string, string[]>): string => JSON.stringify(h)

/**
 * Polls every node's catalog digest (`GET /v1/catalog/digest`, the hash of all heads: a few bytes, where the
 * heads are tens of KiB each time, and polling those every 10 ms loaded the two cores the fleet heals on)
 * until they are equal, then checks that the heads themselves are identical. Resolves with the time from the
 * call until the last node came to hold that catalog: each digest says since when it has had its value
 * (`changedAt`, the node's wall clock; one host here). When the digests were read equal is `readMs`: that
 * adds the poll's own latency (an admin API answers late while its node applies a large document: tens of ms
 * on a heal, and more with more pollers).
 */
export async function timeToIdenticalHeads(apis: string[], timeoutMs: number): Promise<number> {
  return (await whenIdenticalHeads(apis, timeoutMs)).ms
}

export async function whenIdenticalHeads(apis: string[], timeoutMs: number): Promise<{ ms: number; readMs: number }> {
  const t0 = performance.now()
  const wall0 = Date.now()
  return await waitFor(async () => {
    const digests = await Promise.all(apis.map((a) => getJson<{ digest: string; changedAt: number }>(`${a}/v1/catalog/digest`)))
    if (!digests.every((d) => d.digest === digests[0].digest)) return undefined
    const readMs = performance.now() - t0
    const all = await Promise.all(apis.map((a) => catalogHeads(a)))
    if (!all.every((c) => key(c.heads) === key(all[0].heads))) return undefined
    const last = Math.max(...digests.map((d) => d.changedAt))
    return { ms: Math.max(0, last - wall0), readMs }
  }, { timeoutMs, intervalMs: 10, what: `identical heads on ${apis.length} nodes` })
}

/**
 * Every node's full picture, read while their heads are identical (reads repeat until heads are equal
 * before and after the records were read, so that no write landed in between).
 */
export async function identicalPictures(apis: string[], timeoutMs = 10_000): Promise<CatalogPicture[]> {
  return await waitFor(async () => {
    const before = await Promise.all(apis.map((a) => catalogHeads(a)))
    if (!before.every((c) => key(c.heads) === key(before[0].heads))) return undefined
    const pictures = await Promise.all(apis.map((a) => catalogPicture(a)))
    // a node's own periodic writes (its record's lastSeen) can land while its records are being read
    const after = await Promise.all(apis.map((a) => catalogHeads(a)))
    const same = (c: { heads: Record<string, string[]> }): boolean => key(c.heads) === key(before[0].heads)
    return pictures.every(same) && after.every(same) ? pictures : undefined
  }, { timeoutMs, intervalMs: 50, what: 'a moment with identical heads on every node to read their records' })
}
