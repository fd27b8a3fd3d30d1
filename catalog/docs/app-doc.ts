import type * as A from '@automerge/automerge'
import { AppConfigSchema } from '../../schemas/app-config.js'
import type { CatalogEventBody } from '../../schemas/catalog-events.js'
import {
  type AppRecord, AppRecordSchema, type DocId, type MachineRecord, MachineRecordSchema,
} from '../../schemas/catalog-records.js'
import { readBool, readJson, readNum, readStr, str } from './automerge-values.js'
import type { DocKind, Touched } from './doc-kind.js'
import { sameJson } from './same-json.js'

/**
 * One Automerge document per app (DESIGN §2): `app` holds the deployed config, `machines[id]` the app's
 * Machines. Each Machine is split by writer so concurrent merges stay meaningful: `meta` and `desired`
 * come from the control plane (API, autoscaling), `observed` and `health` only from the host node.
 */
export interface AppDocView {
  readonly app: AppRecord | undefined
  readonly machines: ReadonlyMap<string, MachineRecord>
}

type Raw = Record<string, unknown>

const appPart = 'app'
const machinePart = (id: string): string => `m:${id}`

function readAppRecord(name: string, raw: Raw | undefined): AppRecord | undefined {
  if (raw === undefined || readBool(raw.removed) === true || raw.config === undefined) return undefined
  return AppRecordSchema.parse({
    name,
    config: AppConfigSchema.parse(readJson(raw.config)),
    hostnames: readJson(raw.hostnames) ?? [],
    flycast: readStr(raw.flycast),
    version: readNum(raw.version),
    createdAt: readNum(raw.createdAt),
    updatedAt: readNum(raw.updatedAt),
  })
}

function readMachineRecord(raw: Raw): MachineRecord {
  const meta = (readJson(raw.meta) ?? {}) as Raw
  const desired = (readJson(raw.desired) ?? {}) as Raw
  const observed = (readJson(raw.observed) ?? {}) as Raw
  const health = (readJson(raw.health) ?? {}) as Raw
  return MachineRecordSchema.parse({
    id: meta.id,
    app: meta.app,
    region: meta.region,
    node: meta.node,
    spec: meta.spec,
    appVersion: meta.appVersion,
    createdAt: meta.createdAt,
    desired: desired.state,
    desiredReason: desired.reason ?? '',
    desiredAt: desired.at,
    cordoned: desired.cordoned ?? false,
    stopSignal: desired.stopSignal,
    stopTimeout: desired.stopTimeout,
    state: observed.state,
    stateReason: observed.reason ?? '',
    stateAt: observed.at,
    privateAddr: observed.privateAddr,
    checks: health.checks ?? {},
    ready: health.ready ?? false,
    healthAt: health.at ?? 0,
  })
}

function appNameOf(docId: DocId): string {
  return docId.slice('app:'.length)
}

function diffMachine(prev: MachineRecord | undefined, next: MachineRecord | undefined): CatalogEventBody[] {
  if (next === undefined) return prev === undefined ? [] : [{ type: 'machine.removed', app: prev.app, machineId: prev.id }]
  if (prev === undefined) return [{ type: 'machine.upserted', machine: next }]
  const events: CatalogEventBody[] = []
  const controlChanged = prev.desired !== next.desired || prev.desiredReason !== next.desiredReason || prev.desiredAt !== next.desiredAt || prev.cordoned !== next.cordoned || prev.stopSignal !== next.stopSignal || prev.stopTimeout !== next.stopTimeout ||
    prev.region !== next.region || prev.node !== next.node || prev.appVersion !== next.appVersion || !sameJson(prev.spec, next.spec)
  const stateChanged = prev.state !== next.state || prev.stateReason !== next.stateReason
  const addrChanged = prev.privateAddr !== next.privateAddr
  if (controlChanged || (addrChanged && !stateChanged)) events.push({ type: 'machine.upserted', machine: next })
  if (stateChanged) {
    events.push({ type: 'machine.state', app: next.app, machineId: next.id, state: next.state, previous: prev.state, reason: next.stateReason, privateAddr: next.privateAddr, at: next.stateAt })
  }
  if (prev.ready !== next.ready || !sameJson(prev.checks, next.checks)) {
    events.push({ type: 'health.changed', app: next.app, machineId: next.id, checks: next.checks, ready: next.ready, at: next.healthAt })
  }
  return events
}

export const appDocKind: DocKind<AppDocView> = {
  kind: 'app',

  rootFields: (docId) => ({ docId: str(docId), app: {}, machines: {} }),

  emptyView: () => ({ app: undefined, machines: new Map() }),

  touchedBy(patches: A.Patch[]): Touched {
    const parts = new Set<string>()
    for (const p of patches) {
      if (p.path[0] === 'app') parts.add(appPart)
      else if (p.path[0] === 'machines') {
        if (p.path.length === 1) return 'all'
        parts.add(machinePart(String(p.path[1])))
      }
    }
    return parts
  },

  materialize(doc, docId, previous, touched) {
    const root = doc as Raw
    const machinesRaw = (root.machines ?? {}) as Record<string, Raw>
    const app = touched === 'all' || touched.has(appPart) ? readAppRecord(appNameOf(docId), root.app as Raw | undefined) : previous.app
    let machines = previous.machines
    if (touched === 'all') {
      const all = new Map<string, MachineRecord>()
      for (const [id, raw] of Object.entries(machinesRaw)) all.set(id, readMachineRecord(raw))
      machines = all
    } else {
      let copy: Map<string, MachineRecord> | undefined
      for (const part of touched) {
        if (!part.startsWith('m:')) continue
        copy ??= new Map(previous.machines)
        const id = part.slice(2)
        const raw = machinesRaw[id]
        if (raw === undefined) copy.delete(id)
        else copy.set(id, readMachineRecord(raw))
      }
      if (copy !== undefined) machines = copy
    }
    return { app, machines }
  },

  diff(previous, next, touched) {
    const events: CatalogEventBody[] = []
    if (touched === 'all' || touched.has(appPart)) {
      if (next.app === undefined && previous.app !== undefined) events.push({ type: 'app.removed', app: previous.app.name })
      else if (next.app !== undefined && !sameJson(previous.app, next.app)) events.push({ type: 'app.upserted', app: next.app })
    }
    const ids = touched === 'all'
      ? new Set([...previous.machines.keys(), ...next.machines.keys()])
      : [...touched].filter((p) => p.startsWith('m:')).map((p) => p.slice(2))
    for (const id of ids) events.push(...diffMachine(previous.machines.get(id), next.machines.get(id)))
    // an app removed together with its Machines: report the Machines first, then the app
    return events.sort((a, b) => Number(a.type === 'app.removed') - Number(b.type === 'app.removed'))
  },

  serialize: (view) => ({ app: view.app ?? null, machines: [...view.machines.values()] }),

  deserialize(docId, raw) {
    const r = raw as { app?: unknown; machines?: unknown[] }
    const app = r.app === null || r.app === undefined ? undefined : AppRecordSchema.parse(r.app)
    if (app !== undefined && app.name !== appNameOf(docId)) throw new Error(`view of ${docId} holds app "${app.name}"`)
    const machines = new Map<string, MachineRecord>()
    for (const m of r.machines ?? []) {
      const rec = MachineRecordSchema.parse(m)
      machines.set(rec.id, rec)
    }
    return { app, machines }
  },
}
