import { resolve } from 'node:path'
import type { Command } from 'commander'
import { fleetKeyFingerprint, readFleetKey, writeFleetKey } from '../../gossip/index.js'
import { fail, printJson } from './output.js'

/**
 * `edgeproxy fleet init --out DIR`: the folder every node of a fleet shares. Today it holds the fleet key
 * (libp2p private network: a node without it cannot connect); the backhaul CA will join it there.
 */
export function registerFleetCommand(program: Command): void {
  const fleet = program.command('fleet').description('the private fleet network every node shares')

  fleet
    .command('init')
    .description('create a fleet key (DIR/fleet.key, mode 0600); copy DIR to every node and start each with --fleet DIR')
    .requiredOption('--out <dir>', 'folder to write (created with mode 0700 if missing)')
    .option('--force', 'replace an existing fleet key (every node then needs the new one)')
    .action(async (opts: { out: string; force?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<{ json?: boolean }>()
      try {
        const dir = resolve(opts.out)
        const path = await writeFleetKey(dir, { force: opts.force === true })
        const fingerprint = fleetKeyFingerprint(await readFleetKey(path))
        if (g.json === true) {
          printJson({ dir, fleetKey: path, fingerprint })
        } else {
          process.stdout.write(`wrote ${path} (fingerprint ${fingerprint}); keep it secret\n`)
          process.stdout.write(`next: copy ${dir} to every node and start each daemon with --fleet ${dir}\n`)
        }
      } catch (err) {
        fail(err)
      }
    })
}
