import { randomBytes } from 'node:crypto'
import * as A from '@automerge/automerge'
import { type AppConfig, AppConfigSchema, RegionSchema } from '../schemas/app-config.js'
import {
  type CertRecord, CertRecordSchema, type DocId, EnvMapSchema, HostnameSchema, MachineIdSchema, type MachineRecord,
  type MachineSpec, MachineSpecSchema, NodeNameSchema, type NodeRecord, NodeRecordSchema,
} from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { formatPath } from '../schemas/parse-app-config.js'
import type { DeployOptions, MachineCreate } from './catalog-api.js'
import type { CatalogState } from './catalog-state.js'
import * as W from './docs/app-doc-writes.js'
import { writeCert } from './docs/cert-doc.js'
import { NODES_DOC_ID, writeNodeRecord } from './docs/nodes-doc.js'
import { sameJson } from './docs/same-json.js'

/**
 * Local writes are validated here, against the current read model, before anything is queued: an invalid
 * request is refused with the field it is about and the store stays untouched.
 */
export interface Plan {
  docId: DocId
  create: boolean
  run(doc: A.Doc<unknown>): A.Doc<unknown>
}

type Draft = any // eslint-disable-line @typescript-eslint/no-explicit-any

function invalid(what: string, error: { issues: Array<{ path: PropertyKey[]; message: string }> }, prefix: PropertyKey[] = []): EdgeProxyError {
  const issue = error.issues[0]
  const path = formatPath([...prefix, ...issue.path])
  return new EdgeProxyError('EP_INVALID_REQUEST', `${what}: ${path}: ${issue.message}`, { path })
}

export function planDeploy(config: AppConfig, options: DeployOptions, state: CatalogState, now: number): Plan {
  const parsed = AppConfigSchema.safeParse(config)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new EdgeProxyError('EP_INVALID_CONFIG', `invalid app config: ${formatPath(issue.path)}: ${issue.message}`, { path: formatPath(issue.path) })
  }
  const existing = state.apps.get(config.app)
  let hostnames = existing?.hostnames ?? []
  if (options.hostnames !== undefined) {
    const hosts = HostnameSchema.array().safeParse(options.hostnames)
    if (!hosts.success) throw invalid('invalid hostnames', hosts.error, ['hostnames'])
    hostnames = [...new Set(hosts.data)]
  }
  for (const host of hostnames) {
    for (const other of state.apps.values()) {
      if (other.name !== config.app && other.hostnames.includes(host)) {
        throw new EdgeProxyError('EP_CONFLICT', `hostname "${host}" already belongs to app "${other.name}"; remove it there first`, { path: 'hostnames' })
      }
    }
  }
  const value = parsed.data
  return {
    docId: `app:${config.app}`,
    create: true,
    run: (doc) => A.change(doc, (d: Draft) => W.writeAppDeploy(d, value, hostnames, now)),
  }
}

function defaultProcessGroup(config: AppConfig): string {
  const groups = Object.keys(config.processes)
  return groups.length > 0 ? groups[0] : 'app'
}

export function planMachineCreate(input: MachineCreate, state: CatalogState, now: number): { plan: Plan; id: string } {
  const app = state.apps.get(input.app)
  if (app === undefined) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${input.app}"; deploy it first with \`edgeproxy apps deploy\``, { path: 'app' })
  const region = RegionSchema.safeParse(input.region)
  if (!region.success) throw invalid('invalid Machine', region.error, ['region'])
  const node = NodeNameSchema.safeParse(input.node)
  if (!node.success) throw invalid('invalid Machine', node.error, ['node'])
  const id = input.id ?? randomBytes(7).toString('hex')
  const idParsed = MachineIdSchema.safeParse(id)
  if (!idParsed.success) throw invalid('invalid Machine', idParsed.error, ['id'])
  if (state.machines.has(id)) throw new EdgeProxyError('EP_CONFLICT', `Machine ${id} already exists`, { path: 'id' })
  const env = EnvMapSchema.safeParse(input.spec.env ?? {})
  if (!env.success) throw invalid('invalid Machine', env.error, ['env'])
  const reserved = Object.keys(env.data).find((k) => k.startsWith('FLY_'))
  if (reserved !== undefined) throw new EdgeProxyError('EP_INVALID_REQUEST', `invalid Machine: env.${reserved}: keys starting with FLY_ are reserved`, { path: `env.${reserved}` })
  const spec = MachineSpecSchema.safeParse({
    cmd: input.spec.cmd ?? [],
    env: env.data,
    processGroup: input.spec.processGroup ?? defaultProcessGroup(app.config),
  })
  if (!spec.success) throw invalid('invalid Machine', spec.error, ['spec'])
  const groups = Object.keys(app.config.processes)
  if (groups.length > 0 && !groups.includes(spec.data.processGroup)) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `invalid Machine: processGroup: app "${app.name}" has no process group "${spec.data.processGroup}" (it has ${groups.join(', ')})`, { path: 'processGroup' })
  }
  const fallback = app.config.processes[spec.data.processGroup] ?? (app.config.cmd?.length ? app.config.cmd : undefined)
  if (spec.data.cmd.length === 0 && fallback === undefined) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', 'invalid Machine: cmd: required (the app config has no [processes] line or [experimental] cmd for it)', { path: 'cmd' })
  }
  const desired = input.desired ?? 'started'
  const machine: W.NewMachine = {
    id, app: app.name, region: region.data, node: node.data, spec: spec.data as MachineSpec, appVersion: app.version, desired, reason: 'created',
  }
  return {
    id,
    plan: { docId: `app:${app.name}`, create: false, run: (doc) => A.change(doc, (d: Draft) => W.writeMachineCreate(d, machine, now)) },
  }
}

/**
 * lastSeen is refreshed in the document about this often; liveness travels in gossip heartbeats, and a node's
 * `node.down` carries the time its heartbeats stopped. The record's lastSeen only dates nodes this node has not
 * heard since it started. Every refresh is a change every node applies, writes with fsync and keeps in the
 * `nodes` document's history for good: once a minute, 20 nodes made one every 3 s, and one written during a
 * partition heal took 3–4.5 s to reach all 20 on two cores (docs/benchmarks.md, stop 23).
 */
export const LAST_SEEN_REFRESH_MS = 5 * 60_000

/**
 * The refresh period for one node's next lastSeen write, drawn between half and one and a half times
 * LAST_SEEN_REFRESH_MS: a fleet started together would otherwise refresh all its records in the same second
 * every period, and every node applies every one of those changes — on the 20-node benchmark that burst
 * stalled propagation for over a second once a minute.
 */
export function jitteredRefreshMs(): number {
  return LAST_SEEN_REFRESH_MS * (0.5 + Math.random())
}

export function planNodeWrite(
  nodeName: string, current: NodeRecord | undefined, next: Omit<NodeRecord, 'lastSeen'> & { lastSeen?: number }, now: number,
  refreshMs = LAST_SEEN_REFRESH_MS,
): Plan | undefined {
  const record = { ...next, lastSeen: next.lastSeen ?? now }
  const parsed = NodeRecordSchema.safeParse(record)
  if (!parsed.success) throw invalid('invalid node record', parsed.error)
  if (parsed.data.name !== nodeName) throw new EdgeProxyError('EP_CONFLICT', `node "${nodeName}" may only write its own record, not "${parsed.data.name}"`)
  if (current !== undefined) {
    const { lastSeen: a, load: _la, ...restCurrent } = current
    const { lastSeen: b, load: _lb, ...restNext } = parsed.data
    if (sameJson(restCurrent, restNext) && b - a < refreshMs) return undefined
  }
  const value = parsed.data
  return { docId: NODES_DOC_ID, create: true, run: (doc) => A.change(doc, (d: Draft) => writeNodeRecord(d, value)) }
}

export function planCertWrite(cert: Omit<CertRecord, 'addedAt'> | undefined, now: number, hostnameToRemove?: string): { plan: Plan; hostname: string } {
  if (cert === undefined) {
    const hostname = hostnameToRemove as string
    return { hostname, plan: { docId: `cert:${hostname}`, create: false, run: (doc) => A.change(doc, (d: Draft) => writeCert(d, undefined)) } }
  }
  const parsed = CertRecordSchema.safeParse({ ...cert, addedAt: now })
  if (!parsed.success) throw invalid('invalid certificate', parsed.error)
  const value = parsed.data
  return { hostname: value.hostname, plan: { docId: `cert:${value.hostname}`, create: true, run: (doc) => A.change(doc, (d: Draft) => writeCert(d, value)) } }
}

export type { MachineRecord }
