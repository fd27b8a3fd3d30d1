import { spawn } from 'node:child_process'
import { createHash, X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { FLEET_KEY_FILE, fleetKeyFingerprint, fleetKeyPath, readFleetKey, writeFleetKey } from '../fleet-key.js'
import { loadOrCreatePeerKey, peerKeyPath } from '../peer-key.js'

let dir: Awaited<ReturnType<typeof tempDir>>
beforeEach(async () => { dir = await tempDir('edgeproxy-keys-') })
afterEach(async () => { await dir.remove() })

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777

test('fleet init writes a private pre-shared key that reads back, and never overwrites it silently', async () => {
  const out = join(dir.path, 'fleet')
  const path = await writeFleetKey(out)
  expect(path).toBe(join(out, FLEET_KEY_FILE))
  expect(await mode(path)).toBe(0o600)
  expect(await mode(out)).toBe(0o700)
  const key = await readFleetKey(path)
  expect(new TextDecoder().decode(key)).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)

  await expect(writeFleetKey(out)).rejects.toMatchObject({ code: 'EP_CONFLICT', message: expect.stringContaining('--force') })
  expect(await readFleetKey(path)).toEqual(key)
  await writeFleetKey(out, { force: true })
  expect(fleetKeyFingerprint(await readFleetKey(path))).not.toBe(fleetKeyFingerprint(key))
})

test('a missing or malformed fleet key is refused with the path and the next step', async () => {
  const missing = join(dir.path, 'nope', FLEET_KEY_FILE)
  await expect(readFleetKey(missing)).rejects.toMatchObject({ code: 'EP_FLEET_KEY_INVALID', message: expect.stringMatching(/nope\/fleet\.key.*edgeproxy fleet init/) })
  const bad = join(dir.path, 'bad.key')
  await writeFile(bad, 'hunter2\n')
  await expect(readFleetKey(bad)).rejects.toMatchObject({ code: 'EP_FLEET_KEY_INVALID', message: expect.stringContaining('not a libp2p pre-shared key') })
})

test('--fleet-key names the file, --fleet the folder that holds fleet.key', () => {
  expect(fleetKeyPath({ fleetKey: '/etc/k' , fleet: '/etc/fleet' })).toBe('/etc/k')
  expect(fleetKeyPath({ fleet: '/etc/fleet' })).toBe(join('/etc/fleet', FLEET_KEY_FILE))
  expect(fleetKeyPath({})).toBeUndefined()
})

test('the fingerprint names the secret, not its line endings', async () => {
  const path = await writeFleetKey(join(dir.path, 'f'))
  const key = await readFleetKey(path)
  const crlf = new TextEncoder().encode(new TextDecoder().decode(key).replace(/\n/g, '\r\n').toUpperCase().replace('/KEY/SWARM/PSK/1.0.0/', '/key/swarm/psk/1.0.0/').replace('/BASE16/', '/base16/'))
  expect(fleetKeyFingerprint(crlf)).toBe(fleetKeyFingerprint(key))
})

test('the peer key persists in the data dir, so a restart keeps the peer id', async () => {
  const first = await loadOrCreatePeerKey(dir.path)
  const path = peerKeyPath(dir.path)
  expect(path).toBe(join(dir.path, 'gossip', 'peer.key'))
  expect(await mode(path)).toBe(0o600)
  expect((await readFile(path)).byteLength).toBe(68)
  const again = await loadOrCreatePeerKey(dir.path)
  expect(peerIdFromPrivateKey(again).toString()).toBe(peerIdFromPrivateKey(first).toString())
})

test('a corrupt peer key stops the start instead of minting a new identity', async () => {
  await loadOrCreatePeerKey(dir.path)
  await writeFile(peerKeyPath(dir.path), 'garbage')
  await expect(loadOrCreatePeerKey(dir.path)).rejects.toMatchObject({ code: 'EP_PEER_KEY_INVALID', message: expect.stringContaining('peer.key') })
})

async function runFleetCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const entry = join(import.meta.dirname, 'fleet-cli-entry.ts')
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code, stdout, stderr }
}

test('`edgeproxy fleet init --out DIR` writes the key and says what to do next; a second run refuses', async () => {
  const out = join(dir.path, 'myfleet')
  const first = await runFleetCli(['fleet', 'init', '--out', out])
  expect(first.code).toBe(0)
  const fingerprint = fleetKeyFingerprint(await readFleetKey(join(out, FLEET_KEY_FILE)))
  const ca = createHash('sha256').update(new X509Certificate(await readFile(join(out, 'ca.crt'))).raw).digest('hex').slice(0, 12)
  expect(first.stdout).toBe(`wrote ${join(out, FLEET_KEY_FILE)} (fingerprint ${fingerprint}); keep it secret\n`
    + `wrote ${join(out, 'ca.crt')} and ${join(out, 'ca.key')} (fleet CA ${ca}); ca.key signs node certificates: keep it secret\n`
    + `next: copy ${out} to every node and start each daemon with --fleet ${out}\n`)

  const second = await runFleetCli(['fleet', 'init', '--out', out])
  expect(second.code).toBe(1)
  expect(second.stderr).toMatch(/already exists.*--force.*\[EP_CONFLICT\]/)

  const json = await runFleetCli(['--json', 'fleet', 'init', '--out', out, '--force'])
  expect(json.code).toBe(0)
  expect(JSON.parse(json.stdout)).toMatchObject({ dir: out, fleetKey: join(out, FLEET_KEY_FILE), fingerprint: expect.stringMatching(/^[0-9a-f]{12}$/) })
})
