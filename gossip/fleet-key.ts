import { createHash } from 'node:crypto'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKey } from '@libp2p/pnet'
import { EdgeProxyError } from '../schemas/errors.js'

/**
 * The fleet key: a libp2p private-network pre-shared key. Every connection is wrapped in it before Noise
 * runs, so a peer without the same key cannot connect at all (DESIGN §3). `edgeproxy fleet init --out DIR`
 * writes it as DIR/fleet.key; the backhaul CA will live in the same folder.
 */
export const FLEET_KEY_FILE = 'fleet.key'
/** `/key/swarm/psk/1.0.0/\n/base16/\n` + 64 hex digits: the format @libp2p/pnet reads. */
const FLEET_KEY_BYTES = 95
const FORMAT = /^\/key\/swarm\/psk\/1\.0\.0\/\r?\n\/base16\/\r?\n[0-9a-fA-F]{64}\s*$/

export function generateFleetKey(): Uint8Array {
  const key = new Uint8Array(FLEET_KEY_BYTES)
  generateKey(key)
  return key
}

/** Writes DIR/fleet.key (mode 0600, folder 0700). Refuses to replace an existing key unless `force`. */
export async function writeFleetKey(dir: string, options: { force?: boolean } = {}): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const path = join(dir, FLEET_KEY_FILE)
  try {
    await writeFile(path, generateFleetKey(), { mode: 0o600, flag: options.force === true ? 'w' : 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new EdgeProxyError('EP_CONFLICT', `${path} already exists; every node of the fleet needs this same key, so it is kept. Pass --force to replace it (then copy the new key to every node)`)
    }
    throw err
  }
  await chmod(path, 0o600) // writeFile's mode is masked by the umask and ignored for an existing file
  return path
}

/** The key file named by `--fleet-key PATH`, else DIR/fleet.key from `--fleet DIR`, else none. */
export function fleetKeyPath(flags: { fleetKey?: string; fleet?: string }): string | undefined {
  if (flags.fleetKey !== undefined) return flags.fleetKey
  if (flags.fleet !== undefined) return join(flags.fleet, FLEET_KEY_FILE)
  return undefined
}

export async function readFleetKey(path: string): Promise<Uint8Array> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const hint = code === 'ENOENT' ? 'create one with `edgeproxy fleet init --out DIR` and copy it to every node' : `cannot read it (${code ?? 'error'})`
    throw new EdgeProxyError('EP_FLEET_KEY_INVALID', `fleet key ${path}: ${hint}`, { cause: err })
  }
  if (!FORMAT.test(bytes.toString('latin1'))) {
    throw new EdgeProxyError('EP_FLEET_KEY_INVALID', `fleet key ${path} is not a libp2p pre-shared key (expected "/key/swarm/psk/1.0.0/", "/base16/" and 64 hex digits); create one with \`edgeproxy fleet init --out DIR\``)
  }
  return new Uint8Array(bytes)
}

/** A short, non-secret name for a key, logged at start so two nodes' keys can be compared by eye. */
export function fleetKeyFingerprint(key: Uint8Array): string {
  // hash the secret's hex only, so line endings or case do not change the name of the same key
  const hex = Buffer.from(key).toString('latin1').split(/\r?\n/)[2]?.trim().toLowerCase() ?? ''
  return createHash('sha256').update(`edgeproxy fleet key ${hex}`).digest('hex').slice(0, 12)
}
