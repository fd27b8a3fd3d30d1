import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile } from 'node:child_process'

/**
 * A fleet CA and node certificates made by openssl (not by tools/pki): the backhaul must accept any
 * standard X.509 certificates with the right chain, names and key usages.
 */
export interface TestCa {
  certPem: string
  /** A node certificate signed by this CA, CN = `name`, usable as TLS server and client unless `usage` says otherwise. */
  issue(name: string, usage?: 'serverAuth,clientAuth' | 'serverAuth' | 'clientAuth'): Promise<{ certPem: string; keyPem: string }>
  remove(): Promise<void>
}

function openssl(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('openssl', args, { timeout: 15_000 }, (err, _stdout, stderr) => {
      if (err === null) resolve()
      else reject(new Error(`openssl ${args[0]} failed: ${String(stderr) || err.message}`))
    })
    child.stdin?.destroy() // openssl reads nothing here; an open stdin it exits without would only EPIPE
  })
}

export async function testCa(label = 'test fleet CA'): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-ca-'))
  const caKey = join(dir, 'ca.key')
  const caCert = join(dir, 'ca.crt')
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${label}`,
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', caKey, '-out', caCert])
  let serial = 1
  return {
    certPem: await readFile(caCert, 'utf8'),
    async issue(name, usage = 'serverAuth,clientAuth') {
      const base = join(dir, `${name}-${serial}`)
      await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}/OU=node/O=edgeproxy`, '-keyout', `${base}.key`, '-out', `${base}.csr`])
      await writeFile(`${base}.ext`, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\nsubjectAltName=DNS:${name}\n`)
      await openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', caCert, '-CAkey', caKey, '-set_serial', String(serial++), '-days', '2', '-extfile', `${base}.ext`, '-out', `${base}.crt`])
      return { certPem: await readFile(`${base}.crt`, 'utf8'), keyPem: await readFile(`${base}.key`, 'utf8') }
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  }
}
