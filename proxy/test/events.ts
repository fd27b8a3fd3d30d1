import type { CatalogEvent, CatalogEventOf } from '../../schemas/catalog-events.js'
import type { MachineRecord, NodeRecord } from '../../schemas/catalog-records.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'

/** Builds catalog events by hand for unit tests of the routing index (no catalog needed). */
export class EventFeed {
  seq = 0
  private ids = 0

  app(name: string, toml: string, hostnames: string[] = [], createdAt = 1): CatalogEvent {
    const config = parseAppConfigText(`app = "${name}"\n${toml}`).config
    return { seq: ++this.seq, ts: 0, origin: 'n1', type: 'app.upserted', app: { name, config, hostnames, version: 1, createdAt, updatedAt: createdAt } }
  }

  appRemoved(name: string): CatalogEvent {
    return { seq: ++this.seq, ts: 0, origin: 'n1', type: 'app.removed', app: name }
  }

  machine(app: string, over: Partial<MachineRecord> = {}): CatalogEvent & { type: 'machine.upserted' } {
    const id = over.id ?? (++this.ids).toString(16).padStart(14, '0')
    const machine: MachineRecord = {
      id, app, region: 'ams', node: 'n1', spec: { cmd: ['x'], env: {}, processGroup: 'app' }, appVersion: 1, createdAt: 0,
      desired: 'started', desiredReason: '', desiredAt: 0, cordoned: false, state: 'started', stateReason: '', stateAt: 0,
      privateAddr: `127.66.0.${this.ids}`, checks: {}, ready: true, healthAt: 0, ...over,
    }
    return { seq: ++this.seq, ts: 0, origin: 'n1', type: 'machine.upserted', machine }
  }

  health(app: string, machineId: string, checks: Record<string, 'passing' | 'warning' | 'critical'>, ready = true): CatalogEvent {
    const evt: CatalogEventOf<'health.changed'> = { seq: ++this.seq, ts: 0, origin: 'n1', type: 'health.changed', app, machineId, checks, ready, at: 0 }
    return evt
  }

  state(app: string, machineId: string, state: MachineRecord['state']): CatalogEvent {
    const evt: CatalogEventOf<'machine.state'> = { seq: ++this.seq, ts: 0, origin: 'n1', type: 'machine.state', app, machineId, state, previous: 'started', reason: 'test', at: 0 }
    return evt
  }

  node(name: string, region: string): CatalogEvent {
    const node: NodeRecord = { name, region, roles: ['edge', 'worker'], gossip: [], status: 'active', startedAt: 0, lastSeen: 0, load: { machines: 0, connections: 0 }, version: 't' }
    return { seq: ++this.seq, ts: 0, origin: name, type: 'node.joined', node }
  }

  nodeDown(name: string): CatalogEvent {
    return { seq: ++this.seq, ts: 0, origin: 'n1', type: 'node.down', node: name, lastSeen: 0 }
  }
}

export const HTTP_SERVICE = (extra = '') => `[[services]]\ninternal_port = 8080\n${extra}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`
