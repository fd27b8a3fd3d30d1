import type { CatalogEvent } from '../schemas/catalog-events.js'
import type { AppRecord, CertRecord, MachineRecord, NodeRecord, QuarantineRecord } from '../schemas/catalog-records.js'
import type { CatalogSnapshot } from './catalog-api.js'

/**
 * The catalog as plain records, folded from events. The live catalog answers reads from one of these
 * (updated when events are published, so a snapshot and its seq always agree), and `events replay`
 * builds one offline from the log: both run exactly this code.
 */
export class CatalogState {
  readonly apps = new Map<string, AppRecord>()
  readonly machines = new Map<string, MachineRecord>()
  readonly nodes = new Map<string, NodeRecord>()
  readonly certs = new Map<string, CertRecord>()
  /** Nodes whose heartbeat is late (derived node.down without a later node.up). */
  readonly downNodes = new Map<string, number>()
  readonly quarantined = new Map<string, QuarantineRecord>()
  seq = 0

  apply(e: CatalogEvent): void {
    switch (e.type) {
      case 'app.upserted': this.apps.set(e.app.name, e.app); break
      case 'app.removed': this.apps.delete(e.app); break
      case 'machine.upserted': this.machines.set(e.machine.id, e.machine); break
      case 'machine.state': this.patchMachine(e.machineId, { state: e.state, stateReason: e.reason, stateAt: e.at, ...(e.privateAddr === undefined ? {} : { privateAddr: e.privateAddr }) }); break
      case 'health.changed': this.patchMachine(e.machineId, { checks: e.checks, ready: e.ready, healthAt: e.at }); break
      case 'machine.removed': this.machines.delete(e.machineId); break
      case 'node.joined':
      case 'node.updated': this.nodes.set(e.node.name, e.node); break
      case 'node.left': {
        const node = this.nodes.get(e.node)
        if (node !== undefined) this.nodes.set(e.node, { ...node, status: 'left' })
        break
      }
      case 'node.down': this.downNodes.set(e.node, e.lastSeen); break
      case 'node.up': this.downNodes.delete(e.node); break
      case 'cert.upserted': this.certs.set(e.cert.hostname, e.cert); break
      case 'cert.removed': this.certs.delete(e.hostname); break
      case 'catalog.quarantined': this.quarantined.set(e.docId, { docId: e.docId, reason: e.reason, at: e.ts }); break
    }
    this.seq = e.seq
  }

  private patchMachine(id: string, patch: Partial<MachineRecord>): void {
    const m = this.machines.get(id)
    if (m !== undefined) this.machines.set(id, { ...m, ...patch })
  }

  machinesOf(filter: { app?: string; node?: string } = {}): MachineRecord[] {
    const out: MachineRecord[] = []
    for (const m of this.machines.values()) {
      if (filter.app !== undefined && m.app !== filter.app) continue
      if (filter.node !== undefined && m.node !== filter.node) continue
      out.push(m)
    }
    return out
  }

  snapshot(): CatalogSnapshot {
    return {
      seq: this.seq,
      apps: [...this.apps.values()],
      machines: [...this.machines.values()],
      nodes: [...this.nodes.values()],
      certs: [...this.certs.values()],
      downNodes: [...this.downNodes.keys()],
    }
  }
}
