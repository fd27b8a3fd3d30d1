import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import type { AppRecord, MachineRecord } from '../../schemas/catalog-records.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { ApiClient, type ApiOptions } from './api-client.js'
import { registerAppsFlycastCommand } from './flycast-command.js'
import { ago, fail, printJson, printTable } from './output.js'
import { collect } from './options.js'

type Globals = ApiOptions & { json?: boolean }

export function appRows(apps: Array<AppRecord & { machines?: number | MachineRecord[] }>): Array<Record<string, unknown>> {
  return apps.map((a) => ({
    name: a.name,
    version: a.version,
    region: a.config.primary_region,
    ports: [...new Set(a.config.services.flatMap((s) => s.ports.map((p) => (p.start_port === p.end_port ? p.start_port : `${p.start_port}-${p.end_port}`))))],
    machines: Array.isArray(a.machines) ? a.machines.length : a.machines,
    hostnames: a.hostnames,
    updated: ago(a.updatedAt),
  }))
}

export function registerAppsCommands(program: Command): void {
  const apps = program.command('apps').description('deploy and inspect apps')

  apps
    .command('deploy [file]')
    .description('deploy an app from its fly.toml (or the JSON equivalent)')
    .option('--hostname <host>', 'extra public hostname (repeatable)', collect)
    .option('--strict', 'unknown fly.toml keys are errors, not warnings')
    .action(async (file: string | undefined, flags: { hostname?: string[]; strict?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const path = file ?? 'fly.toml'
        let text: string
        try {
          text = await readFile(path, 'utf8')
        } catch (err) {
          throw new EdgeProxyError('EP_INVALID_REQUEST', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
        }
        // parse here first: the file's own name and line numbers make the best error message
        const { config, warnings } = parseAppConfigText(text, { file: path, strict: flags.strict })
        for (const w of warnings) process.stderr.write(`warning: ${w}\n`)
        const query = new URLSearchParams()
        if (flags.hostname !== undefined) query.set('hostnames', flags.hostname.join(','))
        if (flags.strict === true) query.set('strict', '1')
        const qs = query.size > 0 ? `?${query}` : ''
        const type = text.trimStart().startsWith('{') ? 'application/json' : 'text/plain'
        const res = await new ApiClient(g).call<{ app: AppRecord }>('PUT', `/v1/apps/${config.app}${qs}`, { text, type })
        if (g.json === true) printJson(res)
        else process.stdout.write(`deployed ${res.app.name} (version ${res.app.version})\n`)
      } catch (err) {
        fail(err)
      }
    })

  apps
    .command('ls')
    .description('list apps')
    .action(async (_flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const list = await new ApiClient(g).call<AppRecord[]>('GET', '/v1/apps')
        printTable(appRows(list), ['name', 'version', 'region', 'ports', 'machines', 'hostnames', 'updated'], g.json === true, list)
      } catch (err) {
        fail(err)
      }
    })

  apps
    .command('show <app>')
    .description('show an app: its config and its Machines')
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        printJson(await new ApiClient(g).call('GET', `/v1/apps/${encodeURIComponent(name)}`))
      } catch (err) {
        fail(err)
      }
    })

  apps
    .command('rm <app>')
    .description('remove an app (its Machines are destroyed)')
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        await new ApiClient(g).call('DELETE', `/v1/apps/${encodeURIComponent(name)}`)
        if (g.json === true) printJson({ removed: name })
        else process.stdout.write(`removed ${name}\n`)
      } catch (err) {
        fail(err)
      }
    })

  registerAppsFlycastCommand(apps)
}
