import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pino from 'pino'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { runCli } from '../../test/helpers/cli.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { readFleetCa } from '../pki/fleet-ca.js'
import { nodeCertDir, nodeCredentials } from '../pki/node-cert.js'

let dir: Awaited<ReturnType<typeof tempDir>>
beforeEach(async () => { dir = await tempDir('edgeproxy-pki-') })
afterEach(async () => { await dir.remove() })

const log = pino({ level: 'silent' })
const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777
const openssl = async (args: string[]): Promise<string> => (await promisify(execFile)('openssl', args, { timeout: 10_000 })).stdout

test('`fleet init` writes a fleet CA that openssl accepts, and `fleet node-cert` signs node certificates with it', async () => {
  const fleet = join(dir.path, 'fleet')
  const init = await runCli(['fleet', 'init', '--out', fleet])
  expect(init.code).toBe(0)
  expect(init.stdout).toMatch(/wrote .*ca\.crt and .*ca\.key \(fleet CA [0-9a-f]{12}\)/)
  expect(await mode(join(fleet, 'ca.key'))).toBe(0o600)
  const ca = new X509Certificate(await readFile(join(fleet, 'ca.crt')))
  expect(ca.ca).toBe(true)
  expect(await openssl(['x509', '-in', join(fleet, 'ca.crt'), '-noout', '-text'])).toMatch(/CA:TRUE, pathlen:0[\s\S]*Certificate Sign, CRL Sign/)

  const out = join(dir.path, 'certs')
  const issued = await runCli(['fleet', 'node-cert', '--name', 'iad-1', '--fleet', fleet, '--out', out])
  expect(issued.code).toBe(0)
  expect(issued.stdout).toContain(`wrote ${join(out, 'iad-1.crt')} and ${join(out, 'iad-1.key')} for node "iad-1"`)
  expect(await mode(join(out, 'iad-1.key'))).toBe(0o600)
  // an independent verifier: the chain, and both TLS purposes the backhaul uses
  for (const purpose of ['sslserver', 'sslclient']) {
    expect(await openssl(['verify', '-purpose', purpose, '-CAfile', join(fleet, 'ca.crt'), join(out, 'iad-1.crt')])).toContain(': OK')
  }
  expect(new X509Certificate(await readFile(join(out, 'iad-1.crt'))).subject).toContain('CN=iad-1')

  const bad = await runCli(['fleet', 'node-cert', '--name', 'IAD 1', '--fleet', fleet, '--out', out])
  expect(bad.code).toBe(2)
  expect(bad.stderr).toContain('is not a node name')
})

test('`fleet init` adds a CA to a fleet folder made before it, keeping the fleet key; a complete folder is kept', async () => {
  const fleet = join(dir.path, 'fleet')
  expect((await runCli(['fleet', 'init', '--out', fleet])).code).toBe(0)
  const key = await readFile(join(fleet, 'fleet.key'))
  await rm(join(fleet, 'ca.crt'))
  await rm(join(fleet, 'ca.key'))

  const again = await runCli(['fleet', 'init', '--out', fleet])
  expect(again.code).toBe(0)
  expect(again.stdout).toMatch(/^kept .*fleet\.key/)
  expect((await readFile(join(fleet, 'fleet.key'))).equals(key)).toBe(true)
  const ca = await readFile(join(fleet, 'ca.crt'), 'utf8')

  const third = await runCli(['fleet', 'init', '--out', fleet])
  expect(third.code).toBe(1)
  expect(third.stderr).toMatch(/already exists.*--force.*\[EP_CONFLICT\]/)
  expect(await readFile(join(fleet, 'ca.crt'), 'utf8')).toBe(ca)
})

test('a node issues its own certificate at first start when the CA key is there, and keeps it', async () => {
  const fleet = join(dir.path, 'fleet')
  expect((await runCli(['fleet', 'init', '--out', fleet])).code).toBe(0)
  const ca = (await readFleetCa(fleet))!
  const dataDir = join(dir.path, 'ams-1')

  const first = await nodeCredentials({ dataDir, name: 'ams-1', ca, log })
  expect(first.source).toBe('issued')
  expect(await mode(join(nodeCertDir(dataDir), 'node.key'))).toBe(0o600)
  const second = await nodeCredentials({ dataDir, name: 'ams-1', ca, log })
  expect(second).toMatchObject({ source: 'data-dir', certPem: first.certPem })

  // a data dir moved to another name does not lend its identity: a new certificate is issued
  const renamed = await nodeCredentials({ dataDir, name: 'ams-2', ca, log })
  expect(renamed.source).toBe('issued')
  expect(new X509Certificate(renamed.certPem).subject).toContain('CN=ams-2')
})

test('without the CA key a node needs a certificate made for it: missing, foreign or misnamed ones stop the start', async () => {
  const fleet = join(dir.path, 'fleet')
  expect((await runCli(['fleet', 'init', '--out', fleet])).code).toBe(0)
  const nodeFleet = join(dir.path, 'node-fleet')
  await mkdir(nodeFleet)
  await copyFile(join(fleet, 'ca.crt'), join(nodeFleet, 'ca.crt')) // the node gets the CA certificate only
  const ca = (await readFleetCa(nodeFleet))!
  expect(ca.keyPem).toBeUndefined()
  const dataDir = join(dir.path, 'syd-1')

  await expect(nodeCredentials({ dataDir, name: 'syd-1', ca, log })).rejects.toMatchObject({
    code: 'EP_NODE_CERT_INVALID', message: expect.stringContaining('edgeproxy fleet node-cert --name syd-1'),
  })

  const out = join(dir.path, 'certs')
  expect((await runCli(['fleet', 'node-cert', '--name', 'syd-1', '--fleet', fleet, '--out', out])).code).toBe(0)
  const given = await nodeCredentials({ dataDir, name: 'syd-1', ca, log, certFile: join(out, 'syd-1.crt'), keyFile: join(out, 'syd-1.key') })
  expect(given.source).toBe('files')
  await expect(nodeCredentials({ dataDir, name: 'lhr-1', ca, log, certFile: join(out, 'syd-1.crt'), keyFile: join(out, 'syd-1.key') })).rejects.toMatchObject({
    code: 'EP_NODE_CERT_INVALID', message: expect.stringContaining('it names node "syd-1", not "lhr-1"'),
  })

  // a certificate from another fleet's CA
  const other = join(dir.path, 'other')
  expect((await runCli(['fleet', 'init', '--out', other])).code).toBe(0)
  expect((await runCli(['fleet', 'node-cert', '--name', 'syd-1', '--fleet', other, '--out', join(dir.path, 'other-certs')])).code).toBe(0)
  await expect(nodeCredentials({ dataDir, name: 'syd-1', ca, log, certFile: join(dir.path, 'other-certs', 'syd-1.crt'), keyFile: join(dir.path, 'other-certs', 'syd-1.key') })).rejects.toMatchObject({
    code: 'EP_NODE_CERT_INVALID', message: expect.stringContaining('not signed by this fleet CA'),
  })

  // a key that does not belong to the certificate
  await writeFile(join(out, 'mixed.key'), await readFile(join(dir.path, 'other-certs', 'syd-1.key')))
  await expect(nodeCredentials({ dataDir, name: 'syd-1', ca, log, certFile: join(out, 'syd-1.crt'), keyFile: join(out, 'mixed.key') })).rejects.toMatchObject({
    code: 'EP_NODE_CERT_INVALID', message: expect.stringContaining('its key file holds another key'),
  })
})
