import type { Command } from 'commander'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { ApiClient, type ApiOptions } from './api-client.js'
import { ago, fail, printJson, printTable } from './output.js'
import { collect } from './options.js'

type Globals = ApiOptions & { json?: boolean }

export function machineRows(list: MachineRecord[]): Array<Record<string, unknown>> {
  return list.map((m) => ({
    id: m.id,
    app: m.app,
    region: m.region,
    node: m.node,
    state: m.state,
    desired: m.desired,
    health: Object.values(m.checks).includes('critical') ? 'critical' : Object.keys(m.checks).length === 0 ? '-' : 'passing',
    ready: m.ready ? 'yes' : 'no',
    address: m.privateAddr,
    reason: m.stateReason,
    since: ago(m.stateAt),
  }))
}

function parseEnv(pairs: string[] = []): Record<string, string> {
  const env: Record<string, string> = {}
  for (const p of pairs) {
    const i = p.indexOf('=')
    if (i <= 0) throw new EdgeProxyError('EP_INVALID_REQUEST', `--env: expected KEY=VALUE, got "${p}"`)
    env[p.slice(0, i)] = p.slice(i + 1)
  }
  return env
}

export function registerMachinesCommands(program: Command): void {
  const machines = program.command('machines').description('run and control Machines')

  machines
    .command('run')
    .description('create a Machine of an app: edgeproxy machines run --app A [--region R] -- CMD ARGS…')
    .requiredOption('--app <app>', 'app the Machine belongs to')
    .option('--region <code>', 'region (default: the app\'s primary region)')
    .option('--node <name>', 'worker node to run on (default: chosen in the region)')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', collect)
    .option('--process-group <name>', 'fly.toml [processes] group')
    .option('--stopped', 'create it stopped (autostart or `machines start` starts it)')
    .argument('[cmd...]', 'command and arguments, after --')
    .action(async (cmdArgs: string[], flags: { app: string; region?: string; node?: string; env?: string[]; processGroup?: string; stopped?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const body = {
          region: flags.region,
          node: flags.node,
          cmd: cmdArgs.length > 0 ? cmdArgs : undefined,
          env: parseEnv(flags.env),
          processGroup: flags.processGroup,
          desired: flags.stopped === true ? 'stopped' : 'started',
        }
        const m = await new ApiClient(g).call<MachineRecord>('POST', `/v1/apps/${encodeURIComponent(flags.app)}/machines`, body)
        if (g.json === true) printJson(m)
        else process.stdout.write(`created Machine ${m.id} of ${m.app} in ${m.region} on ${m.node}\n`)
      } catch (err) {
        fail(err)
      }
    })

  machines
    .command('ls')
    .description('list Machines')
    .option('--app <app>', 'only this app\'s Machines')
    .action(async (flags: { app?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const list = await new ApiClient(g).call<MachineRecord[]>('GET', flags.app === undefined ? '/v1/machines' : `/v1/apps/${encodeURIComponent(flags.app)}/machines`)
        printTable(machineRows(list), ['id', 'app', 'region', 'node', 'state', 'desired', 'health', 'ready', 'address', 'reason', 'since'], g.json === true, list)
      } catch (err) {
        fail(err)
      }
    })

  for (const action of ['start', 'stop', 'suspend'] as const) {
    machines
      .command(`${action} <id>`)
      .description(`${action} a Machine`)
      .action(async (id: string, _flags: unknown, cmd: Command) => {
        const g = cmd.optsWithGlobals<Globals>()
        try {
          const m = await new ApiClient(g).call<MachineRecord>('POST', `/v1/machines/${encodeURIComponent(id)}/${action}`)
          if (g.json === true) printJson(m)
          else process.stdout.write(`Machine ${m.id}: desired ${m.desired} (now ${m.state})\n`)
        } catch (err) {
          fail(err)
        }
      })
  }

  machines
    .command('destroy <id>')
    .description('destroy a Machine')
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const m = await new ApiClient(g).call<MachineRecord>('DELETE', `/v1/machines/${encodeURIComponent(id)}`)
        if (g.json === true) printJson(m)
        else process.stdout.write(`Machine ${m.id}: destroying\n`)
      } catch (err) {
        fail(err)
      }
    })

  machines
    .command('logs <id>')
    .description('print a Machine\'s output (on the node that runs it)')
    .option('-f, --follow', 'keep printing new output')
    .option('-n, --tail <lines>', 'lines of history', '200')
    .action(async (id: string, flags: { follow?: boolean; tail: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const abort = new AbortController()
        process.once('SIGINT', () => abort.abort())
        const q = new URLSearchParams({ tail: flags.tail, follow: flags.follow === true ? '1' : '0' })
        const body = await new ApiClient(g).stream(`/v1/machines/${encodeURIComponent(id)}/logs?${q}`, abort.signal)
        for await (const chunk of body) process.stdout.write(chunk)
      } catch (err) {
        if ((err as Error).name === 'AbortError') return
        fail(err)
      }
    })
}
