import { Command } from 'commander'
import { VERSION } from '../version.js'
import { registerAppsCommands } from './apps-command.js'
import { registerCatalogCommands } from './catalog-command.js'
import { registerCertsCommands } from './certs-command.js'
import { registerDaemonCommands } from './daemon-command.js'
import { registerEventsCommands } from './events-command.js'
import { registerFleetCommand } from './fleet.js'
import { registerRouteCommands } from './route-command.js'
import { registerMachinesCommands } from './machines-command.js'

export function buildProgram(): Command {
  const program = new Command()
  program
    .name('edgeproxy')
    .description('a self-hostable edge proxy and control plane (Fly Proxy without Fly)')
    .version(VERSION)
    .option('--api <url>', 'admin API of the node to talk to (env EDGEPROXY_API)', process.env.EDGEPROXY_API ?? 'http://127.0.0.1:4280')
    .option('--token-file <file>', 'bearer token for an admin API off loopback (env EDGEPROXY_TOKEN_FILE)')
    .option('--json', 'machine-readable output')
    .showHelpAfterError('(run with --help for usage)')
  registerDaemonCommands(program)
  registerAppsCommands(program)
  registerMachinesCommands(program)
  registerCatalogCommands(program)
  registerEventsCommands(program)
  registerCertsCommands(program)
  registerFleetCommand(program)
  registerRouteCommands(program)
  return program
}

export async function main(argv: string[]): Promise<void> {
  await buildProgram().parseAsync(argv)
}
