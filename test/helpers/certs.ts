import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

/**
 * A real self-signed certificate made by openssl, for tests: `{ certPem, keyPem, certPath, keyPath }`.
 * P-256 by default; `rsa` makes an RSA 2048 one (what most CA-issued certificates users bring are).
 */
export async function opensslCert(dir: string, hostname: string, days = 30, keyType: 'ec' | 'rsa' = 'ec'): Promise<{ certPem: string; keyPem: string; certPath: string; keyPath: string }> {
  const base = join(dir, `${hostname.replace(/\*/g, 'wild')}${keyType === 'rsa' ? '.rsa' : ''}`)
  const certPath = `${base}.crt`
  const keyPath = `${base}.key`
  await promisify(execFile)('openssl', [
    'req', '-x509', ...(keyType === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']), '-nodes', '-days', String(days),
    '-subj', `/CN=${hostname}`, '-addext', `subjectAltName=DNS:${hostname}`, '-keyout', keyPath, '-out', certPath,
  ], { timeout: 30_000 })
  return { certPem: await readFile(certPath, 'utf8'), keyPem: await readFile(keyPath, 'utf8'), certPath, keyPath }
}
