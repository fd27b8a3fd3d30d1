import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import * as A from '@automerge/automerge'
import pino, { type Logger } from 'pino'
import type { AppConfig } from '../schemas/app-config.js'
import type { CatalogEvent } from '../schemas/catalog-events.js'
import { type AppRecord, type CertRecord, type DesiredState, type DocId, DocIdSchema, type MachineRecord, type NodeRecord, NODE_NAME } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'
import type {
  ApplyRemoteResult, Catalog, CatalogSnapshot, DeployOptions, HealthReport, MachineCreate, NodeSelfRecord, ObservedReport,
  PeerSyncState, StopOptions, Subscription, SubscribeOptions,
} from './catalog-api.js'
import { CatalogState } from './catalog-state.js'
import { changeHeader } from './change-header.js'
import { DocRegistry, type DocState, kindOf } from './doc-registry.js'
import type { AppDocView } from './docs/app-doc.js'
import { actorFor, nodeOfActor } from './docs/automerge-values.js'
import type { CertDocView } from './docs/cert-doc.js'
import type { NodesDocView } from './docs/nodes-doc.js'
import { EventLog } from './event-log.js'
import { jitteredRefreshMs, planCertWrite, planDeploy, planMachineCreate, planNodeWrite, type Plan } from './plans.js'
import { KEYS } from './storage/keys.js'
import { type CatalogDb, openDb } from './storage/level-db.js'
import { scanCatalog } from './storage/startup-scan.js'
import { type OpResult, WritePipeline } from './write-pipeline.js'
import * as W from './docs/app-doc-writes.js'

export interface OpenCatalogOptions {
  /** The node's data directory; the catalog lives in `<dataDir>/catalog`. */
  dataDir: string
  nodeName: string
  logger?: Logger
  /** fsync every batch (default true): an acknowledged write survives a power cut, not only a crash. */
  sync?: boolean
}

interface AmSyncState extends PeerSyncState {
  am: A.SyncState
}

export async function openCatalog(options: OpenCatalogOptions): Promise<Catalog> {
  const catalog = new LevelCatalog(options)
  await catalog.open()
  return catalog
}

class LevelCatalog implements Catalog {
  readonly nodeName: string
  private readonly log: Logger
  private db!: CatalogDb
  private registry!: DocRegistry
  private lastSeenRefreshMs = jitteredRefreshMs()
  private events!: EventLog
  private pipeline!: WritePipeline
  private readonly state = new CatalogState()
  private readonly localListeners = new Set<(docId: DocId, changes: Uint8Array[]) => void>()

  constructor(private readonly options: OpenCatalogOptions) {
    if (!NODE_NAME.test(options.nodeName)) {
      throw new EdgeProxyError('EP_INVALID_REQUEST', `node name "${options.nodeName}" must be 1–63 lowercase letters, digits or dashes`)
    }
    this.nodeName = options.nodeName
    this.log = options.logger ?? pino({ level: 'silent' })
  }

  async open(): Promise<void> {
    const location = join(this.options.dataDir, 'catalog')
    await mkdir(location, { recursive: true })
    try {
      this.db = await openDb(location)
    } catch (err) {
      const busy = (err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED'
      throw new EdgeProxyError('EP_INVALID_REQUEST', busy
        ? `the catalog in ${location} is in use by another edgeproxy process; stop it or choose another --data-dir`
        : `cannot open the catalog in ${location}: ${(err as Error).message}`, { cause: err })
    }
    const actor = await this.loadActor()
    this.registry = new DocRegistry(this.db, actor)
    this.events = new EventLog(this.db, await EventLog.readLastSeq(this.db), this.log)
    const scan = await scanCatalog(this.db)
    for (const s of scan.states) {
      this.registry.states.set(s.docId, s)
      this.seedReadModel(s)
    }
    for (const q of scan.quarantined) {
      this.state.quarantined.set(q.docId, q)
      const parsed = DocIdSchema.safeParse(q.docId)
      if (parsed.success) this.registry.states.set(parsed.data, quarantinedState(parsed.data))
    }
    this.pipeline = new WritePipeline(this.db, this.registry, this.events, this.nodeName, {
      published: (events) => {
        for (const e of events) this.state.apply(e)
        this.events.publish(events)
      },
      localChanges: (docId, changes) => {
        for (const l of this.localListeners) l(docId, changes)
      },
    }, this.log, this.options.sync ?? true)
    for (const b of scan.broken) {
      // served until the quarantine below removes it, so that its removal reaches the event log
      const state = b.state ?? quarantinedState(b.docId)
      state.quarantined = false
      this.registry.states.set(b.docId, state)
      if (b.state !== undefined) this.seedReadModel(b.state)
    }
    this.state.seq = this.events.lastSeq
    for (const state of this.registry.states.values()) this.registry.refreshDigest(state)
    for (const b of scan.broken) {
      this.log.error({ docId: b.docId, reason: b.reason }, 'catalog document quarantined at start-up')
      await this.pipeline.submit({ type: 'quarantine', docId: b.docId, reason: b.reason })
    }
    this.log.info({ docs: scan.states.length, seq: this.events.lastSeq, quarantined: this.state.quarantined.size }, 'catalog open')
  }

  private async loadActor(): Promise<string> {
    const stored = await this.db.get(KEYS.meta('actor'))
    if (stored !== undefined) {
      const actor = stored.toString('utf8')
      const owner = nodeOfActor(actor)
      if (owner !== this.nodeName) {
        throw new EdgeProxyError('EP_CONFLICT', `data directory ${this.options.dataDir} belongs to node "${owner}", not "${this.nodeName}"; use --name ${owner} or another --data-dir`)
      }
      return actor
    }
    const actor = actorFor(this.nodeName, randomBytes(8))
    await this.db.put(KEYS.meta('actor'), Buffer.from(actor), { sync: true })
    return actor
  }

  private seedReadModel(s: DocState): void {
    if (s.kind.kind === 'app') {
      const v = s.view as AppDocView
      if (v.app !== undefined) this.state.apps.set(v.app.name, v.app)
      for (const m of v.machines.values()) this.state.machines.set(m.id, m)
    } else if (s.kind.kind === 'nodes') {
      for (const n of (s.view as NodesDocView).nodes.values()) this.state.nodes.set(n.name, n)
    } else if (s.kind.kind === 'cert') {
      const c = (s.view as CertDocView).cert
      if (c !== undefined) this.state.certs.set(c.hostname, c)
    }
  }

  async close(): Promise<void> {
    if (this.pipeline === undefined) return
    await this.pipeline.close()
    this.events.close()
    this.localListeners.clear()
    this.registry.freeAll()
    await this.db.close()
  }

  // ---- reader ----

  get lastSeq(): number { return this.events.lastSeq }
  listApps(): AppRecord[] { return [...this.state.apps.values()] }
  getApp(name: string): AppRecord | undefined { return this.state.apps.get(name) }
  listMachines(filter?: { app?: string; node?: string }): MachineRecord[] { return this.state.machinesOf(filter) }
  getMachine(id: string): MachineRecord | undefined { return this.state.machines.get(id) }
  listNodes(): NodeRecord[] { return [...this.state.nodes.values()] }
  getNode(name: string): NodeRecord | undefined { return this.state.nodes.get(name) }
  listCerts(): CertRecord[] { return [...this.state.certs.values()] }
  listQuarantined() { return [...this.state.quarantined.values()] }
  snapshot(): CatalogSnapshot { return this.state.snapshot() }
  subscribe(options: SubscribeOptions, listener: (event: CatalogEvent) => void): Subscription { return this.events.subscribe(options, listener) }
  readEvents(fromSeq: number, toSeq?: number): AsyncIterable<CatalogEvent> { return this.events.readEvents(fromSeq, toSeq) }

  // ---- writer ----

  private async run(plan: Plan): Promise<OpResult> {
    return this.pipeline.submit({ type: 'change', docId: plan.docId, create: plan.create, run: plan.run })
  }

  private requireMachine(id: string): MachineRecord {
    const m = this.state.machines.get(id)
    if (m === undefined) throw new EdgeProxyError('EP_MACHINE_NOT_FOUND', `no Machine "${id}"; see \`edgeproxy machines ls\``)
    return m
  }

  private requireHost(m: MachineRecord, what: string): void {
    if (m.node !== this.nodeName) {
      throw new EdgeProxyError('EP_CONFLICT', `only Machine ${m.id}'s host node "${m.node}" writes its ${what}; this is "${this.nodeName}"`)
    }
  }

  async deployApp(config: AppConfig, options: DeployOptions = {}): Promise<AppRecord> {
    const plan = planDeploy(config, options, this.state, Date.now())
    await this.run(plan)
    return this.state.apps.get(config.app) as AppRecord
  }

  async removeApp(name: string): Promise<void> {
    if (!this.state.apps.has(name)) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${name}"; see \`edgeproxy apps ls\``)
    const machines = this.state.machinesOf({ app: name }).map((m) => m.id)
    await this.run({
      docId: `app:${name}`,
      create: false,
      run: (doc) => A.change(doc, (d: any) => { // eslint-disable-line @typescript-eslint/no-explicit-any
        const at = Date.now()
        W.writeAppRemoved(d, at)
        for (const id of machines) if (d.machines[id] !== undefined) W.writeDesired(d, id, 'destroyed', 'app removed', at)
      }),
    })
  }

  async setFlycast(app: string, address: string): Promise<AppRecord> {
    if (!this.state.apps.has(app)) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${app}"; see \`edgeproxy apps ls\``)
    await this.run({ docId: `app:${app}`, create: false, run: (doc) => A.change(doc, (d: any) => W.writeFlycast(d, address, Date.now())) }) // eslint-disable-line @typescript-eslint/no-explicit-any
    return this.state.apps.get(app) as AppRecord
  }

  async createMachine(input: MachineCreate): Promise<MachineRecord> {
    const { plan, id } = planMachineCreate(input, this.state, Date.now())
    await this.run(plan)
    return this.requireMachine(id)
  }

  async setDesiredState(machineId: string, desired: DesiredState, reason: string, stop: StopOptions = {}): Promise<MachineRecord> {
    const m = this.requireMachine(machineId)
    if (desired !== 'destroyed' && (m.desired === 'destroyed' || m.state === 'destroyed')) {
      throw new EdgeProxyError('EP_MACHINE_DESTROYED', `Machine ${m.id} is destroyed and cannot be ${desired}; create a new one with \`edgeproxy machines run\``)
    }
    // a repeated start of a failed Machine is a new request (the supervisor retries it), so it is written
    const retry = desired === 'started' && m.state === 'failed'
    const stopChanged = stop.signal !== m.stopSignal || stop.timeoutMs !== m.stopTimeout
    if (m.desired !== desired || m.desiredReason !== reason || retry || stopChanged || (desired === 'started' && m.cordoned)) {
      await this.run({ docId: `app:${m.app}`, create: false, run: (doc) => A.change(doc, (d: any) => W.writeDesired(d, m.id, desired, reason, Date.now(), stop)) }) // eslint-disable-line @typescript-eslint/no-explicit-any
    }
    return this.requireMachine(machineId)
  }

  async setCordoned(machineId: string, cordoned: boolean, reason: string): Promise<MachineRecord> {
    const m = this.requireMachine(machineId)
    if (m.cordoned !== cordoned) {
      await this.run({ docId: `app:${m.app}`, create: false, run: (doc) => A.change(doc, (d: any) => W.writeCordoned(d, m.id, cordoned, reason, Date.now())) }) // eslint-disable-line @typescript-eslint/no-explicit-any
    }
    return this.requireMachine(machineId)
  }

  async reportObserved(machineId: string, report: ObservedReport): Promise<void> {
    const m = this.requireMachine(machineId)
    this.requireHost(m, 'observed state')
    const addr = report.privateAddr ?? m.privateAddr
    if (m.state === report.state && m.stateReason === report.reason && m.privateAddr === addr) return
    await this.run({
      docId: `app:${m.app}`,
      create: false,
      run: (doc) => A.change(doc, (d: any) => W.writeObserved(d, m.id, report.state, report.reason, report.privateAddr, Date.now())), // eslint-disable-line @typescript-eslint/no-explicit-any
    })
  }

  async reportHealth(machineId: string, report: HealthReport): Promise<void> {
    const m = this.requireMachine(machineId)
    this.requireHost(m, 'health')
    if (m.ready === report.ready && sameChecks(m.checks, report.checks)) return
    await this.run({
      docId: `app:${m.app}`,
      create: false,
      run: (doc) => A.change(doc, (d: any) => W.writeHealth(d, m.id, report.checks, report.ready, Date.now())), // eslint-disable-line @typescript-eslint/no-explicit-any
    })
  }

  async removeMachine(machineId: string): Promise<void> {
    const m = this.requireMachine(machineId)
    this.requireHost(m, 'removal')
    await this.run({ docId: `app:${m.app}`, create: false, run: (doc) => A.change(doc, (d: any) => W.deleteMachine(d, m.id)) }) // eslint-disable-line @typescript-eslint/no-explicit-any
  }

  async upsertSelf(record: NodeSelfRecord): Promise<void> {
    const plan = planNodeWrite(this.nodeName, this.state.nodes.get(this.nodeName), { ...record, status: 'active' }, Date.now(), this.lastSeenRefreshMs)
    if (plan === undefined) return
    await this.run(plan)
    this.lastSeenRefreshMs = jitteredRefreshMs()
  }

  async markSelfLeft(): Promise<void> {
    const current = this.state.nodes.get(this.nodeName)
    if (current === undefined || current.status === 'left') return
    const plan = planNodeWrite(this.nodeName, current, { ...current, status: 'left' }, Date.now())
    if (plan !== undefined) await this.run(plan)
  }

  async putCert(cert: Omit<CertRecord, 'addedAt'>): Promise<CertRecord> {
    const { plan, hostname } = planCertWrite(cert, Date.now())
    await this.run(plan)
    return this.state.certs.get(hostname) as CertRecord
  }

  async removeCert(hostname: string): Promise<void> {
    if (!this.state.certs.has(hostname)) throw new EdgeProxyError('EP_NOT_FOUND', `no certificate for "${hostname}"; see \`edgeproxy certs ls\``)
    await this.run(planCertWrite(undefined, Date.now(), hostname).plan)
  }

  async appendDerived(event: { type: 'node.down'; node: string; lastSeen: number } | { type: 'node.up'; node: string }): Promise<CatalogEvent> {
    const result = await this.pipeline.submit({ type: 'derived', bodies: [event] })
    return result.events[0]
  }

  // ---- replica ----

  digestHash(): Uint8Array {
    return this.registry.digestHash.current()
  }

  digestChangedAt(): number {
    return this.registry.digestHash.changedAt
  }

  digest(): Map<DocId, string[]> {
    const out = new Map<DocId, string[]>()
    for (const s of this.registry.states.values()) if (s.persisted && !s.quarantined) out.set(s.docId, [...s.durableHeads].sort())
    return out
  }

  onLocalChange(listener: (docId: DocId, changes: Uint8Array[]) => void): Subscription {
    this.localListeners.add(listener)
    return { close: () => { this.localListeners.delete(listener) } }
  }

  isQuarantined(docId: DocId): boolean {
    return this.registry.states.get(docId)?.quarantined === true
  }

  async applyRemoteChanges(docId: DocId, changes: Uint8Array[], fromPeer: string, priority: 'normal' | 'background' = 'normal'): Promise<ApplyRemoteResult> {
    const id = parseDocId(docId)
    const hashes: string[] = []
    let bringsRoot = false
    for (const [i, c] of changes.entries()) {
      try {
        const header = changeHeader(c)
        hashes.push(header.hash)
        if (header.deps === 0) bringsRoot = true
      } catch (err) {
        throw new EdgeProxyError('EP_INVALID_REQUEST', `change ${i} for ${id} from ${fromPeer} is not a valid Automerge change`, { cause: err })
      }
    }
    // changes this node already holds (a second copy, a relay of what came another way) cost a lookup, not a
    // copy of the document and a write (the pipeline copies a document before applying a peer's changes to it)
    const loaded = this.registry.current(id)
    if (loaded !== undefined && holdsAll(loaded, hashes)) return { events: [], missingDeps: false, changes: [] }
    const r = await this.pipeline.submit({ type: 'change', docId: id, create: true, startEmpty: bringsRoot, fromPeer, run: (doc) => A.applyChanges(doc, changes)[0] }, priority)
    return { events: r.events, missingDeps: r.missingDeps, changes: r.changes }
  }

  newSyncState(docId: DocId): PeerSyncState {
    const state: AmSyncState = { docId: parseDocId(docId), am: A.initSyncState() }
    return state
  }

  async generateSyncMessage(state: PeerSyncState): Promise<Uint8Array | null> {
    const s = state as AmSyncState
    const docState = this.registry.state(s.docId, 'empty') as DocState
    if (docState.quarantined) return null
    return await this.withLoadedDoc(docState, (doc) => {
      const [next, message] = A.generateSyncMessage(doc, s.am)
      s.am = next
      return message
    })
  }

  async changesForPeer(docId: DocId, theirHeads: readonly string[] | undefined): Promise<Uint8Array[] | undefined> {
    const docState = this.registry.state(parseDocId(docId), false)
    if (docState === undefined || docState.quarantined || !docState.persisted) return undefined
    return await this.withLoadedDoc(docState, (doc) => {
      if (theirHeads === undefined) return A.getAllChanges(doc)
      return holdsAll(doc, theirHeads as string[]) ? A.getChangesSince(doc, theirHeads as string[]) : undefined
    })
  }

  /**
   * Runs `use` on the loaded copy in the same tick it is looked up. A write replaces the copy and frees the old
   * handle, and it may run in any microtask between two awaits: a handle handed back through a promise (an async
   * function's return) could be freed before the caller touched it ("null pointer passed to rust").
   */
  private async withLoadedDoc<T>(docState: DocState, use: (doc: A.Doc<unknown>) => T): Promise<T> {
    for (let attempt = 0; attempt < 4; attempt++) {
      await this.registry.load(docState)
      const doc = this.registry.current(docState.docId)
      if (doc !== undefined) return use(doc)
    }
    throw new EdgeProxyError('EP_INTERNAL', `document ${docState.docId} could not be kept loaded for a sync message`)
  }

  syncLevel(state: PeerSyncState): boolean {
    const s = state as AmSyncState
    // the exported sync state carries the heads the partner last reported (A.SyncState types it opaque)
    const theirs = (s.am as unknown as { theirHeads?: string[] | null }).theirHeads
    const doc = this.registry.current(s.docId)
    if (theirs === undefined || theirs === null || doc === undefined) return false
    const ours = A.getHeads(doc)
    return ours.length === theirs.length && ours.every((h) => theirs.includes(h))
  }

  async receiveSyncMessage(state: PeerSyncState, message: Uint8Array, fromPeer: string): Promise<ApplyRemoteResult> {
    const s = state as AmSyncState
    try {
      A.decodeSyncMessage(message)
    } catch (err) {
      throw new EdgeProxyError('EP_INVALID_REQUEST', `sync message for ${s.docId} from ${fromPeer} is not a valid Automerge sync message`, { cause: err })
    }
    let nextSync: A.SyncState | undefined
    const r = await this.pipeline.submit({
      type: 'change',
      docId: s.docId,
      create: true,
      startEmpty: true,
      fromPeer,
      run: (doc) => {
        const [next, synced] = A.receiveSyncMessage(doc, s.am, message)
        nextSync = synced
        return next
      },
    }, 'urgent') // the partner waits for the answer
    if (nextSync !== undefined) s.am = nextSync
    return { events: r.events, missingDeps: r.missingDeps, changes: r.changes }
  }
}

/**
 * The document has applied every one of these changes. Empty only when they are all in its history and it
 * queues nothing (a queued change always waits for a missing one); A.hasHeads answers the same by building
 * each change's bytes, which made it the heaviest part of receiving a relayed message.
 */
function holdsAll(doc: A.Doc<unknown>, hashes: string[]): boolean {
  return A.getMissingDeps(doc, hashes).length === 0
}

function parseDocId(docId: string): DocId {
  const parsed = DocIdSchema.safeParse(docId)
  if (!parsed.success) throw new EdgeProxyError('EP_INVALID_REQUEST', `invalid document id "${docId}": ${parsed.error.issues[0].message}`)
  return parsed.data
}

function quarantinedState(docId: DocId): DocState {
  const kind = kindOf(docId)
  return { docId, kind, view: kind.emptyView(docId), heads: [], durableHeads: [], docHash: '', chgFirst: 0, chgNext: 0, persisted: false, quarantined: true }
}

function sameChecks(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  return ka.every((k) => a[k] === b[k])
}
