import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { FLEET_KEY_FILE, fleetKeyFingerprint, readFleetKey, writeFleetKey } from '../../gossip/index.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { NODE_NAME } from '../../schemas/catalog-records.js'
import { CA_CERT_FILE, CA_KEY_FILE, caFingerprint, fileExists, readFleetCa, writeFleetCa } from '../pki/fleet-ca.js'
import { issueNodeCert, writePair } from '../pki/node-cert.js'
import { fail, printJson } from './output.js'

/**
 * `edgeproxy fleet init --out DIR`: the folder every node of a fleet shares — the fleet key (libp2p private
 * network: a node without it cannot connect) and the fleet CA (the backhaul accepts only certificates it
 * signed). `edgeproxy fleet node-cert --name N` makes one node's certificate where the CA key is kept.
 */
export function registerFleetCommand(program: Command): void {
  const fleet = program.command('fleet').description('the private fleet network every node shares')

  fleet
    .command('init')
    .description('create a fleet key (DIR/fleet.key) and a fleet CA (DIR/ca.crt, DIR/ca.key); copy DIR to every node and start each with --fleet DIR')
    .requiredOption('--out <dir>', 'folder to write (created with mode 0700 if missing)')
    .option('--force', 'replace an existing fleet key and CA (every node then needs the new ones)')
    .action(async (opts: { out: string; force?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<{ json?: boolean }>()
      try {
        const dir = resolve(opts.out)
        const force = opts.force === true
        const haveKey = await fileExists(join(dir, FLEET_KEY_FILE))
        const haveCa = await fileExists(join(dir, CA_CERT_FILE))
        // a fleet made before the backhaul existed gets its CA added; its key is kept
        const keyPath = !haveKey || force || haveCa ? await writeFleetKey(dir, { force }) : join(dir, FLEET_KEY_FILE)
        const ca = !haveCa || force ? await writeFleetCa(dir, { force }) : undefined
        const fingerprint = fleetKeyFingerprint(await readFleetKey(keyPath))
        if (g.json === true) {
          printJson({ dir, fleetKey: keyPath, fingerprint, ...(ca === undefined ? {} : { caCert: ca.certPath, caKey: ca.keyPath, caFingerprint: ca.fingerprint }) })
          return
        }
        const lines = haveKey && !force
          ? [`kept ${keyPath} (fingerprint ${fingerprint})`]
          : [`wrote ${keyPath} (fingerprint ${fingerprint}); keep it secret`]
        if (ca !== undefined) lines.push(`wrote ${ca.certPath} and ${ca.keyPath} (fleet CA ${ca.fingerprint}); ca.key signs node certificates: keep it secret`)
        lines.push(`next: copy ${dir} to every node and start each daemon with --fleet ${dir}`)
        process.stdout.write(`${lines.join('\n')}\n`)
      } catch (err) {
        fail(err)
      }
    })

  fleet
    .command('node-cert')
    .description('issue a node\'s backhaul certificate with the fleet CA, for nodes that do not hold ca.key (start them with --node-cert and --node-key)')
    .requiredOption('--name <name>', 'the node name, as given to `edgeproxy daemon --name`')
    .requiredOption('--fleet <dir>', 'the fleet folder holding ca.crt and ca.key')
    .option('--out <dir>', 'where to write <name>.crt and <name>.key (default: the current folder)', '.')
    .action(async (opts: { name: string; fleet: string; out: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<{ json?: boolean }>()
      try {
        if (!NODE_NAME.test(opts.name)) throw new EdgeProxyError('EP_INVALID_REQUEST', `--name: "${opts.name}" is not a node name (1–63 lowercase letters, digits or dashes)`, { path: 'name' })
        const ca = await readFleetCa(resolve(opts.fleet))
        if (ca === undefined) throw new EdgeProxyError('EP_FLEET_CA_INVALID', `${resolve(opts.fleet, CA_CERT_FILE)} does not exist; create the fleet CA with \`edgeproxy fleet init --out ${opts.fleet}\``)
        if (ca.keyPem === undefined) throw new EdgeProxyError('EP_FLEET_CA_INVALID', `${ca.keyPath} is not here; run this where the fleet CA key (${CA_KEY_FILE}) is kept`)
        const out = resolve(opts.out)
        const certPath = join(out, `${opts.name}.crt`)
        const keyPath = join(out, `${opts.name}.key`)
        const pair = await issueNodeCert({ certPem: ca.certPem, keyPem: ca.keyPem }, opts.name)
        await writePair(out, certPath, keyPath, pair)
        if (g.json === true) {
          printJson({ name: opts.name, cert: certPath, key: keyPath, ca: caFingerprint(ca.certPem) })
          return
        }
        process.stdout.write(`wrote ${certPath} and ${keyPath} for node "${opts.name}" (fleet CA ${caFingerprint(ca.certPem)})\n`)
        process.stdout.write(`next: copy both to that node and start it with --fleet DIR --node-cert ${opts.name}.crt --node-key ${opts.name}.key (DIR needs ca.crt, not ca.key)\n`)
      } catch (err) {
        fail(err)
      }
    })
}
