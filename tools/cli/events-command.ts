import type { Command } from 'commander'
import { openOfflineEventLog, replayEvents } from '../../catalog/index.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import { ApiClient, type ApiOptions } from './api-client.js'
import { appRows } from './apps-command.js'
import { machineRows } from './machines-command.js'
import { fail, printJson, printTable } from './output.js'
import { parseSeq } from './options.js'

type Globals = ApiOptions & { json?: boolean }

/** One line per event for people: seq, time, origin, type and what changed. */
export function describeEvent(e: CatalogEvent): string {
  const t = new Date(e.ts).toISOString().slice(11, 23)
  let what: string
  switch (e.type) {
    case 'app.upserted': what = `${e.app.name} v${e.app.version}`; break
    case 'app.removed': what = e.app; break
    case 'machine.upserted': what = `${e.machine.app}/${e.machine.id} desired=${e.machine.desired}${e.machine.cordoned ? ' cordoned' : ''} (${e.machine.desiredReason})`; break
    case 'machine.state': what = `${e.app}/${e.machineId} ${e.previous} → ${e.state} (${e.reason})`; break
    case 'machine.removed': what = `${e.app}/${e.machineId}`; break
    case 'health.changed': what = `${e.app}/${e.machineId} ready=${e.ready} ${Object.entries(e.checks).map(([k, v]) => `${k}=${v}`).join(' ')}`; break
    case 'node.joined':
    case 'node.updated': what = `${e.node.name} ${e.node.region} ${e.node.roles.join(',')}`; break
    case 'node.left':
    case 'node.up': what = e.node; break
    case 'node.down': what = `${e.node} (last seen ${new Date(e.lastSeen).toISOString()})`; break
    case 'cert.upserted': what = e.cert.hostname; break
    case 'cert.removed': what = e.hostname; break
    case 'catalog.quarantined': what = `${e.docId}: ${e.reason}`; break
  }
  return `${String(e.seq).padStart(6)}  ${t}  ${e.origin.padEnd(10)}  ${e.type.padEnd(18)}  ${what}`
}

export function registerEventsCommands(program: Command): void {
  const events = program.command('events').description('the catalog event log')

  events
    .command('tail')
    .description('print catalog events from a node')
    .option('--from <seq>', 'first seq (default: the last 20 events)')
    .option('-f, --follow', 'keep printing new events')
    .option('--app <app>', 'only events about this app')
    .action(async (flags: { from?: string; follow?: boolean; app?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const api = new ApiClient(g)
        let from = flags.from === undefined ? undefined : parseSeq(flags.from, '--from')
        if (from === undefined) {
          const health = await api.call<{ seq: number }>('GET', '/healthz')
          from = Math.max(1, health.seq - 19)
        }
        const q = new URLSearchParams({ from: String(from), follow: flags.follow === true ? '1' : '0' })
        if (flags.app !== undefined) q.set('app', flags.app)
        const abort = new AbortController()
        process.once('SIGINT', () => abort.abort())
        let buffered = ''
        for await (const chunk of await api.stream(`/v1/events?${q}`, abort.signal)) {
          buffered += chunk.toString('utf8')
          let nl: number
          while ((nl = buffered.indexOf('\n')) !== -1) {
            const line = buffered.slice(0, nl)
            buffered = buffered.slice(nl + 1)
            if (line.trim() === '') continue
            process.stdout.write(g.json === true ? `${line}\n` : `${describeEvent(JSON.parse(line) as CatalogEvent)}\n`)
          }
        }
      } catch (err) {
        if ((err as Error).name === 'AbortError') return
        fail(err)
      }
    })

  events
    .command('replay')
    .description('rebuild the catalog as it stood at a seq from a stopped node\'s event log, and print it')
    .requiredOption('--data-dir <dir>', 'the node\'s data directory')
    .option('--to <seq>', 'last seq to apply (default: the end of the log)')
    .option('--app <app>', 'only this app and its Machines')
    .action(async (flags: { dataDir: string; to?: string; app?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const log = await openOfflineEventLog(flags.dataDir)
        const toSeq = flags.to === undefined ? log.lastSeq : Math.min(parseSeq(flags.to, '--to'), log.lastSeq)
        const tty = process.stderr.isTTY === true
        const every = Math.max(1000, Math.ceil(toSeq / 20))
        const state = await replayEvents(log.events(1, toSeq), {
          toSeq,
          progressEvery: every,
          onProgress: (seq) => process.stderr.write(`${tty ? '\r' : ''}replaying… ${seq}/${toSeq} (${Math.round((seq / toSeq) * 100)}%)${tty ? '' : '\n'}`),
        })
        await log.close()
        if (tty && toSeq >= every) process.stderr.write('\n')
        const apps = [...state.apps.values()].filter((a) => flags.app === undefined || a.name === flags.app)
        const machines = [...state.machines.values()].filter((m) => flags.app === undefined || m.app === flags.app)
        if (g.json === true) {
          printJson({ seq: state.seq, apps, machines, nodes: [...state.nodes.values()], downNodes: [...state.downNodes.keys()], quarantined: [...state.quarantined.values()] })
          return
        }
        process.stdout.write(`catalog at seq ${state.seq} (log ends at ${log.lastSeq})\n\nAPPS\n`)
        printTable(appRows(apps), ['name', 'version', 'region', 'ports', 'hostnames'], false)
        process.stdout.write('\nMACHINES\n')
        printTable(machineRows(machines), ['id', 'app', 'region', 'node', 'state', 'desired', 'health', 'ready', 'address', 'reason'], false)
        if (flags.app === undefined) {
          process.stdout.write('\nNODES\n')
          printTable([...state.nodes.values()].map((n) => ({ name: n.name, region: n.region, roles: n.roles, status: state.downNodes.has(n.name) ? 'down' : n.status })), ['name', 'region', 'roles', 'status'], false)
        }
      } catch (err) {
        fail(err)
      }
    })
}
