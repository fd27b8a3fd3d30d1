import { request } from 'undici'
import type { CatalogEvent } from '../../../schemas/catalog-events.js'
import type { AppRecord, MachineRecord } from '../../../schemas/catalog-records.js'

/** A node's whole event log, from its admin API (`GET /v1/events?from=1`, NDJSON up to the newest seq). */
export async function readEventLog(api: string, from = 1): Promise<CatalogEvent[]> {
  const res = await request(`${api}/v1/events?from=${from}`, { headersTimeout: 10_000, bodyTimeout: 30_000 })
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`${api}/v1/events: ${res.statusCode} ${text}`)
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as CatalogEvent)
}

/** The entity an event is about, for per-entity ordering checks (undefined: not an app or Machine event). */
export function entityOf(e: CatalogEvent): string | undefined {
  switch (e.type) {
    case 'app.upserted': return `app:${e.app.name}`
    case 'app.removed': return `app:${e.app}`
    case 'machine.upserted': return `machine:${e.machine.id}`
    case 'machine.state':
    case 'machine.removed':
    case 'health.changed': return `machine:${e.machineId}`
    default: return undefined
  }
}

/** The event without its envelope: two applications of one change would have equal payloads. */
export function payloadOf(e: CatalogEvent): string {
  const { seq: _seq, ts: _ts, origin: _origin, ...rest } = e
  return JSON.stringify(rest)
}

/**
 * Apps and Machines as the log says they are: a fold written here, independently of the catalog's own
 * (catalog/catalog-state.ts), so that comparing it with what the nodes serve checks the log, not the fold.
 */
export function foldLog(events: CatalogEvent[]): { apps: Map<string, AppRecord>; machines: Map<string, MachineRecord> } {
  const apps = new Map<string, AppRecord>()
  const machines = new Map<string, MachineRecord>()
  for (const e of events) {
    switch (e.type) {
      case 'app.upserted': apps.set(e.app.name, e.app); break
      case 'app.removed': apps.delete(e.app); break
      case 'machine.upserted': machines.set(e.machine.id, e.machine); break
      case 'machine.removed': machines.delete(e.machineId); break
      case 'machine.state': {
        const m = machines.get(e.machineId)
        if (m !== undefined) machines.set(e.machineId, { ...m, state: e.state, stateReason: e.reason, stateAt: e.at, privateAddr: e.privateAddr ?? m.privateAddr })
        break
      }
      case 'health.changed': {
        const m = machines.get(e.machineId)
        if (m !== undefined) machines.set(e.machineId, { ...m, checks: e.checks, ready: e.ready, healthAt: e.at })
        break
      }
      default: break
    }
  }
  return { apps, machines }
}
