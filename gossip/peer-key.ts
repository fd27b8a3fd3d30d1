import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { EdgeProxyError } from '../schemas/errors.js'

/** `<dataDir>/gossip/peer.key`: the node's libp2p identity, so a restart keeps its peer id (DESIGN §3). */
export function peerKeyPath(dataDir: string): string {
  return join(dataDir, 'gossip', 'peer.key')
}

/** Reads the persisted Ed25519 key (protobuf, 68 bytes), or creates one on first start. */
export async function loadOrCreatePeerKey(dataDir: string): Promise<PrivateKey> {
  const path = peerKeyPath(dataDir)
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      // never replace it silently: a new key is a new peer id, and peers would see a stranger
      throw new EdgeProxyError('EP_PEER_KEY_INVALID', `${path} is not a libp2p private key; restore it from a backup, or delete it to start with a new peer id`, { cause: err })
    }
  }
  const key = await generateKeyPair('Ed25519')
  await mkdir(join(dataDir, 'gossip'), { recursive: true, mode: 0o700 })
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600 })
  await rename(tmp, path) // atomic: a crash never leaves half a key behind
  return key
}
