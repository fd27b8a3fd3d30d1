import type { Command } from 'commander'
import type { AppRecord, MachineRecord, NodeRecord, QuarantineRecord } from '../../schemas/catalog-records.js'
import { ApiClient, type ApiOptions } from './api-client.js'
import { appRows } from './apps-command.js'
import { machineRows } from './machines-command.js'
import { ago, fail, printJson, printTable } from './output.js'

type Globals = ApiOptions & { json?: boolean }
type LiveNode = NodeRecord & { up: boolean; self: boolean; rttMs?: number }

export function registerCatalogCommands(program: Command): void {
  const catalog = program.command('catalog').description('inspect the catalog as this node holds it')

  catalog.command('apps').description('apps in the catalog').action(async (_f: unknown, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      const list = await new ApiClient(g).call<AppRecord[]>('GET', '/v1/apps')
      printTable(appRows(list), ['name', 'version', 'region', 'ports', 'machines', 'hostnames', 'updated'], g.json === true, list)
    } catch (err) {
      fail(err)
    }
  })

  catalog.command('machines').description('Machines in the catalog').option('--app <app>', 'only this app').action(async (flags: { app?: string }, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      const list = await new ApiClient(g).call<MachineRecord[]>('GET', `/v1/machines${flags.app === undefined ? '' : `?app=${encodeURIComponent(flags.app)}`}`)
      printTable(machineRows(list), ['id', 'app', 'region', 'node', 'state', 'desired', 'health', 'ready', 'address', 'reason', 'since'], g.json === true, list)
    } catch (err) {
      fail(err)
    }
  })

  catalog.command('nodes').description('nodes of the fleet: region, roles, up/down, RTT, last heartbeat').action(async (_f: unknown, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      const list = await new ApiClient(g).call<LiveNode[]>('GET', '/v1/nodes')
      const rows = list.map((n) => ({
        name: n.self ? `${n.name} (this node)` : n.name,
        region: n.region,
        roles: n.roles,
        status: n.status === 'left' ? 'left' : n.up ? 'up' : 'down',
        rtt: n.rttMs === undefined ? '-' : `${n.rttMs.toFixed(1)} ms`,
        'last seen': ago(n.lastSeen),
        admin: n.admin,
        version: n.version,
      }))
      printTable(rows, ['name', 'region', 'roles', 'status', 'rtt', 'last seen', 'admin', 'version'], g.json === true, list)
    } catch (err) {
      fail(err)
    }
  })

  catalog.command('show <doc>').description('one document as JSON (app:<name>, nodes, cert:<host>)').action(async (doc: string, _f: unknown, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      const id = doc.includes(':') || doc === 'nodes' ? doc : `app:${doc}`
      printJson(await new ApiClient(g).call('GET', `/v1/catalog/docs/${encodeURIComponent(id)}`))
    } catch (err) {
      fail(err)
    }
  })

  catalog.command('quarantine').description('documents set aside because they could not be loaded or applied').action(async (_f: unknown, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      const list = await new ApiClient(g).call<QuarantineRecord[]>('GET', '/v1/catalog/quarantine')
      printTable(list.map((q) => ({ doc: q.docId, since: ago(q.at), reason: q.reason })), ['doc', 'since', 'reason'], g.json === true, list)
    } catch (err) {
      fail(err)
    }
  })
}
