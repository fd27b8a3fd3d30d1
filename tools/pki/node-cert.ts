import { createPrivateKey, X509Certificate } from 'node:crypto'
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { FleetCa } from './fleet-ca.js'
import { fileExists } from './fleet-ca.js'
import { crypto, DAY_MS, EC_P256, generateKeys, importSigningKey, type PemPair, privateKeyPem, rdnValue, serialNumber, x509 } from './x509.js'

/**
 * A node's backhaul certificate (issue 7): signed by the fleet CA, subject CN = the node name, usable as
 * both TLS server (a worker's backhaul listener) and TLS client (an edge dialling a worker). Peers check
 * the chain to the fleet CA and that the CN names the node they meant to reach.
 */
export const NODE_CERT_FILE = 'node.crt'
export const NODE_KEY_FILE = 'node.key'
const NODE_VALID_DAYS = 365
/** A certificate this close to expiry is renewed at start when the CA key is at hand. */
const RENEW_BEFORE_DAYS = 30

export function nodeCertDir(dataDir: string): string {
  return join(dataDir, 'backhaul')
}

/** Signs a fresh key pair for `name` with the fleet CA. */
export async function issueNodeCert(ca: PemPair, name: string, validDays = NODE_VALID_DAYS): Promise<PemPair> {
  const caCert = new x509.X509Certificate(ca.certPem)
  const signingKey = await importSigningKey(ca.keyPem)
  const keys = await generateKeys()
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${rdnValue(name)}, OU=node, O=edgeproxy`,
    issuer: caCert.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + validDays * DAY_MS),
    signingAlgorithm: EC_P256,
    publicKey: keys.publicKey,
    signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false, crypto),
    ],
  }, crypto)
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) }
}

/** Why `pair` cannot serve as `name`'s certificate under this CA, or undefined when it can. */
export function nodeCertProblem(pair: PemPair, ca: X509Certificate, name: string, now = Date.now()): string | undefined {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(pair.certPem)
  } catch {
    return 'it is not a PEM certificate'
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1]
  if (cn !== name) return `it names node "${cn ?? '?'}", not "${name}"`
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return 'it was not signed by this fleet CA (was the fleet CA replaced?)'
  if (Date.parse(cert.validTo) <= now) return `it expired on ${cert.validTo}`
  try {
    if (!cert.checkPrivateKey(createPrivateKey(pair.keyPem))) return 'its key file holds another key'
  } catch {
    return 'its key file is not a PEM private key'
  }
  return undefined
}

export interface NodeCredentials extends PemPair {
  caPem: string
  certPath: string
  /** Where it came from: given files, the data dir, or issued just now with the CA key. */
  source: 'files' | 'data-dir' | 'issued'
}

export interface NodeCredentialsInit {
  dataDir: string
  name: string
  ca: FleetCa
  /** `--node-cert` / `--node-key`: a certificate made by `edgeproxy fleet node-cert`. */
  certFile?: string
  keyFile?: string
  log: Logger
}

/**
 * This node's backhaul identity: the given files, else `<dataDir>/backhaul/node.{crt,key}`, else — when the
 * fleet CA key was copied to this node — a certificate issued now and kept in the data dir. A missing or
 * unusable certificate stops the start with the next step to take.
 */
export async function nodeCredentials(o: NodeCredentialsInit): Promise<NodeCredentials> {
  const { ca, name } = o
  if (o.certFile !== undefined || o.keyFile !== undefined) {
    if (o.certFile === undefined || o.keyFile === undefined) throw new EdgeProxyError('EP_NODE_CERT_INVALID', '--node-cert and --node-key go together; pass both')
    const pair = { certPem: await readText(o.certFile), keyPem: await readText(o.keyFile) }
    const problem = nodeCertProblem(pair, ca.cert, name)
    if (problem !== undefined) throw new EdgeProxyError('EP_NODE_CERT_INVALID', `${o.certFile} cannot be node "${name}"'s backhaul certificate: ${problem}; make one with \`edgeproxy fleet node-cert --name ${name}\``)
    return { ...pair, caPem: ca.certPem, certPath: o.certFile, source: 'files' }
  }
  const dir = nodeCertDir(o.dataDir)
  const certPath = join(dir, NODE_CERT_FILE)
  const keyPath = join(dir, NODE_KEY_FILE)
  let reason = 'this node has none yet'
  if (await fileExists(certPath)) {
    const pair = { certPem: await readText(certPath), keyPem: await readText(keyPath) }
    const problem = nodeCertProblem(pair, ca.cert, name)
    const expiresInDays = problem === undefined ? (Date.parse(new X509Certificate(pair.certPem).validTo) - Date.now()) / DAY_MS : 0
    if (problem === undefined && (expiresInDays > RENEW_BEFORE_DAYS || ca.keyPem === undefined)) {
      if (expiresInDays <= RENEW_BEFORE_DAYS) o.log.warn({ certPath, expiresInDays: Math.floor(expiresInDays) }, 'the backhaul certificate expires soon and the fleet CA key is not here to renew it; run `edgeproxy fleet node-cert`')
      return { ...pair, caPem: ca.certPem, certPath, source: 'data-dir' }
    }
    reason = problem ?? `it expires in ${Math.floor(expiresInDays)} days`
  }
  if (ca.keyPem === undefined) {
    throw new EdgeProxyError('EP_NODE_CERT_INVALID', `node "${name}" has no usable backhaul certificate (${certPath}: ${reason}) and ${ca.keyPath} is not here to issue one; run \`edgeproxy fleet node-cert --name ${name} --fleet DIR --out OUT\` where the CA key is and start with --node-cert OUT/${name}.crt --node-key OUT/${name}.key, or copy ca.key into the fleet folder`)
  }
  const pair = await issueNodeCert({ certPem: ca.certPem, keyPem: ca.keyPem }, name)
  await writePair(dir, certPath, keyPath, pair)
  o.log.info({ certPath, reason }, 'issued this node\'s backhaul certificate with the fleet CA')
  return { ...pair, caPem: ca.certPem, certPath, source: 'issued' }
}

/** The key first and both by rename, so a crash never leaves a certificate next to another key. */
export async function writePair(dir: string, certPath: string, keyPath: string, pair: PemPair): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  await writeFile(`${keyPath}.tmp`, pair.keyPem, { mode: 0o600 })
  await chmod(`${keyPath}.tmp`, 0o600)
  await writeFile(`${certPath}.tmp`, pair.certPem, { mode: 0o644 })
  await rename(`${keyPath}.tmp`, keyPath)
  await rename(`${certPath}.tmp`, certPath)
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new EdgeProxyError('EP_NODE_CERT_INVALID', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
}
