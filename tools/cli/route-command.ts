import type { Command } from 'commander'
import type { RouteExplanation } from '../../proxy/index.js'
import { ApiClient, type ApiOptions } from './api-client.js'
import { fail, printJson, printTable } from './output.js'
import { collect, parseSeq } from './options.js'

type Globals = ApiOptions & { json?: boolean }
type Explained = RouteExplanation & { seq: number; region: string; live: boolean }

export function registerRouteCommands(program: Command): void {
  const route = program.command('route').description('routing decisions')

  route
    .command('explain')
    .description('which Machine a request for a host would go to, and why (the proxy\'s own routing code)')
    .requiredOption('--host <host>', 'Host / SNI of the request')
    .option('--port <port>', 'public port the client dials', '80')
    .option('--region <code>', 'explain as seen from an edge in this region (default: the node asked)')
    .option('--header <name:value>', 'routing header such as fly-prefer-region:iad (repeatable)', collect)
    .option('--at <seq>', 'explain against the catalog as it stood at this seq of the event log')
    .action(async (flags: { host: string; port: string; region?: string; header?: string[]; at?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const q = new URLSearchParams({ host: flags.host, port: flags.port })
        if (flags.region !== undefined) q.set('region', flags.region)
        if (flags.at !== undefined) q.set('at', String(parseSeq(flags.at, '--at')))
        for (const h of flags.header ?? []) q.append('header', h)
        const e = await new ApiClient(g).call<Explained>('GET', `/v1/route/explain?${q}`)
        if (g.json === true) {
          printJson(e)
          return
        }
        const where = e.live ? `live on this edge (${e.region}, seq ${e.seq})` : `as of seq ${e.seq}, from an edge in ${e.region} (loads 0, static distances)`
        process.stdout.write(`${e.host}:${e.publicPort} → app ${e.app ?? '(none)'}, ${where}\n`)
        if (e.service !== undefined) {
          process.stdout.write(`service: internal_port ${e.service.internalPort}, concurrency ${e.service.type} soft ${e.service.softLimit} hard ${e.service.hardLimit ?? 'none'}, ${e.service.waiting} queued\n`)
        }
        if (e.hints !== undefined) process.stdout.write(`routing headers: ${JSON.stringify(e.hints)}\n`)
        process.stdout.write('\nCANDIDATES (in the order regions are tried)\n')
        printTable(e.candidates.map((c) => ({ ...c, rtt: `${c.rttMs} ms` })), ['machine', 'region', 'node', 'rtt', 'load', 'tier'], false)
        if (e.excluded.length > 0) {
          process.stdout.write('\nEXCLUDED\n')
          printTable(e.excluded, ['machine', 'region', 'reason'], false)
        }
        const choice = e.choice
        process.stdout.write('\n')
        if (choice === undefined) process.stdout.write(`no route: ${e.problem ?? 'unknown'}\n`)
        else if ('none' in choice) process.stdout.write(`no Machine: ${e.why ?? choice.none}\n`)
        else process.stdout.write(`choice: ${choice.machine} in ${choice.region} on ${choice.node} — ${e.why}\n`)
      } catch (err) {
        fail(err)
      }
    })
}
