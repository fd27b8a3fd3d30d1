// Runs `edgeproxy fleet …` alone, as a child process, until the lead registers the command in tools/cli/main.ts.
import { Command } from 'commander'
import { registerFleetCommand } from '../../tools/cli/fleet.js'

const program = new Command().name('edgeproxy').option('--json', 'machine-readable output')
registerFleetCommand(program)
await program.parseAsync(process.argv)
