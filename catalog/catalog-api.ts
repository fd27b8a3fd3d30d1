import type { AppConfig, KillSignal } from '../schemas/app-config.js'
import type { CatalogEvent } from '../schemas/catalog-events.js'
import type {
  AppRecord, CertRecord, CheckStatus, DesiredState, DocId, MachineRecord, MachineSpec, MachineState, NodeRecord,
  QuarantineRecord,
} from '../schemas/catalog-records.js'

/**
 * The catalog's surface, in three slices so that each component takes only what it needs:
 * readers (proxy, CLI) see plain records and events; writers (API, supervisor, membership) make changes;
 * the replica slice (gossip) moves Automerge bytes without ever holding Automerge objects.
 */

export interface Subscription {
  /** Stops delivery; safe to call twice. */
  close(): void
}

export interface SubscribeOptions {
  /** First seq to deliver (default: the next event after now). Events from the log are replayed first. */
  fromSeq?: number
}

/** A consistent picture of the catalog at one seq: load it, then subscribe from `seq + 1`. */
export interface CatalogSnapshot {
  seq: number
  apps: AppRecord[]
  machines: MachineRecord[]
  nodes: NodeRecord[]
  certs: CertRecord[]
  /** Nodes currently considered down (derived node.down without a later node.up). */
  downNodes: string[]
}

export interface CatalogReader {
  readonly nodeName: string
  /** Seq of the newest event in the log (0 when empty). */
  readonly lastSeq: number
  listApps(): AppRecord[]
  getApp(name: string): AppRecord | undefined
  listMachines(filter?: { app?: string; node?: string }): MachineRecord[]
  getMachine(id: string): MachineRecord | undefined
  listNodes(): NodeRecord[]
  getNode(name: string): NodeRecord | undefined
  listCerts(): CertRecord[]
  listQuarantined(): QuarantineRecord[]
  snapshot(): CatalogSnapshot
  /**
   * Delivers every event with seq ≥ fromSeq in order, with no gap and no duplicate between the replayed
   * part of the log and the live part, then follows live. The listener runs synchronously for live events.
   */
  subscribe(options: SubscribeOptions, listener: (event: CatalogEvent) => void): Subscription
  /** Events in [fromSeq, toSeq] from the log, oldest first. */
  readEvents(fromSeq: number, toSeq?: number): AsyncIterable<CatalogEvent>
}

export interface DeployOptions {
  hostnames?: string[]
}

export interface MachineCreate {
  app: string
  region: string
  node: string
  spec: Partial<MachineSpec>
  /** Default: started. */
  desired?: 'started' | 'stopped'
  id?: string
}

/** A stop request's own signal and grace period (Fly's stop body); default: the app's kill_signal/kill_timeout. */
export interface StopOptions {
  signal?: KillSignal
  timeoutMs?: number
}

export interface ObservedReport {
  state: MachineState
  reason: string
  privateAddr?: string
}

export interface HealthReport {
  checks: Record<string, CheckStatus>
  ready: boolean
}

export interface NodeSelfRecord extends Omit<NodeRecord, 'status' | 'lastSeen'> {
  lastSeen?: number
}

export interface CatalogWriter {
  deployApp(config: AppConfig, options?: DeployOptions): Promise<AppRecord>
  removeApp(name: string): Promise<void>
  setFlycast(app: string, address: string): Promise<AppRecord>
  createMachine(input: MachineCreate): Promise<MachineRecord>
  /** Control plane: what the Machine should be. `reason` travels to events (`autostart: request 01H…`). */
  setDesiredState(machineId: string, desired: DesiredState, reason: string, stop?: StopOptions): Promise<MachineRecord>
  setCordoned(machineId: string, cordoned: boolean, reason: string): Promise<MachineRecord>
  /** Host node only: what its supervisor observed. Written only when something changed. */
  reportObserved(machineId: string, report: ObservedReport): Promise<void>
  /** Host node only. Written only when something changed. */
  reportHealth(machineId: string, report: HealthReport): Promise<void>
  /** Host node only, after the Machine is destroyed: drops it from the app document. */
  removeMachine(machineId: string): Promise<void>
  /** This node's own membership record. */
  upsertSelf(record: NodeSelfRecord): Promise<void>
  markSelfLeft(): Promise<void>
  putCert(cert: Omit<CertRecord, 'addedAt'>): Promise<CertRecord>
  removeCert(hostname: string): Promise<void>
  /** Events derived locally (node.down / node.up) go into the log like any other. */
  appendDerived(event: { type: 'node.down'; node: string; lastSeen: number } | { type: 'node.up'; node: string }): Promise<CatalogEvent>
}

/** Automerge sync state for one (peer, document) pair; opaque outside the catalog. */
export interface PeerSyncState {
  readonly docId: DocId
}

export interface ApplyRemoteResult {
  /** Events produced (possibly none: the changes were already known). */
  events: CatalogEvent[]
  /** Changes whose dependencies are missing; a sync of the document is needed. */
  missingDeps: boolean
  /** The Automerge changes this node did not hold before, as applied (empty: nothing new). */
  changes: Uint8Array[]
}

export interface CatalogReplica {
  readonly nodeName: string
  /** docId → sorted heads of every document this node holds (from memory; no I/O). */
  digest(): Map<DocId, string[]>
  /** 32 bytes summarising digest() (catalog/digest-hash.ts); kept current per change, O(1) to read. */
  digestHash(): Uint8Array
  /** Wall-clock ms when digestHash() last changed: since when this node has held exactly what it holds now. */
  digestChangedAt(): number
  /** Changes made on this node, as soon as they are durable. */
  onLocalChange(listener: (docId: DocId, changes: Uint8Array[]) => void): Subscription
  /** Apply changes received from a peer; validates, persists and emits events in one batch. */
  /**
   * `background`: bulk catch-up (a sync session's pushed documents), applied a few per write group so that
   * round trips and local writes do not wait behind it.
   */
  applyRemoteChanges(docId: DocId, changes: Uint8Array[], fromPeer: string, priority?: 'normal' | 'background'): Promise<ApplyRemoteResult>
  newSyncState(docId: DocId): PeerSyncState
  /** Next Automerge sync message for this peer and document, or null when the peer has all we have. */
  generateSyncMessage(state: PeerSyncState): Promise<Uint8Array | null>
  receiveSyncMessage(state: PeerSyncState, message: Uint8Array, fromPeer: string): Promise<ApplyRemoteResult>
  /** The partner's last sync message showed exactly the heads this node holds now: the document is level. */
  syncLevel(state: PeerSyncState): boolean
  /**
   * The changes a peer whose heads of `docId` are `theirHeads` (undefined: it lacks the document) is missing,
   * when this node holds every one of those heads; undefined when it does not (the peer has changes this node
   * lacks, so only Automerge's sync protocol can tell what each side needs) or does not hold the document.
   */
  changesForPeer(docId: DocId, theirHeads: readonly string[] | undefined): Promise<Uint8Array[] | undefined>
  isQuarantined(docId: DocId): boolean
}

export interface Catalog extends CatalogReader, CatalogWriter, CatalogReplica {
  open(): Promise<void>
  close(): Promise<void>
}
