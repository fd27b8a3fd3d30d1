import { createHash, createPrivateKey, X509Certificate } from 'node:crypto'
import { access, chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { EdgeProxyError } from '../../schemas/errors.js'
import { crypto, DAY_MS, EC_P256, generateKeys, type PemPair, privateKeyPem, serialNumber, x509 } from './x509.js'

/**
 * The fleet CA (issue 7): a self-signed ECDSA P-256 certificate that signs every node's backhaul
 * certificate. `edgeproxy fleet init` writes it next to the fleet key; a worker accepts backhaul
 * connections only from certificates it signed, and an edge only talks to workers it signed.
 *
 * DIR/ca.crt is public (every node needs it); DIR/ca.key mints node identities, so it goes only to the
 * nodes that should issue their own certificate at first start (otherwise use `fleet node-cert`).
 */
export const CA_CERT_FILE = 'ca.crt'
export const CA_KEY_FILE = 'ca.key'
const CA_VALID_DAYS = 3650

export interface FleetCa {
  certPem: string
  /** Present only where DIR/ca.key was copied. */
  keyPem: string | undefined
  cert: X509Certificate
  certPath: string
  keyPath: string
}

export async function createFleetCa(validDays = CA_VALID_DAYS): Promise<PemPair> {
  const keys = await generateKeys()
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=edgeproxy fleet CA ${serialNumber().slice(0, 8)}, O=edgeproxy`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + validDays * DAY_MS),
    signingAlgorithm: EC_P256,
    keys,
    extensions: [
      // pathLen 0: the CA signs node certificates only, never another CA
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    ],
  }, crypto)
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) }
}

/** Writes DIR/ca.crt (0644) and DIR/ca.key (0600). Refuses to replace an existing CA unless `force`. */
export async function writeFleetCa(dir: string, options: { force?: boolean } = {}): Promise<{ certPath: string; keyPath: string; fingerprint: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const certPath = join(dir, CA_CERT_FILE)
  const keyPath = join(dir, CA_KEY_FILE)
  const ca = await createFleetCa()
  const flag = options.force === true ? 'w' : 'wx'
  try {
    await writeFile(keyPath, ca.keyPem, { mode: 0o600, flag })
    await writeFile(certPath, ca.certPem, { mode: 0o644, flag })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new EdgeProxyError('EP_CONFLICT', `${dir} already exists with a fleet CA; every node trusts it, so it is kept. Pass --force to replace it (then every node needs a new certificate)`)
    }
    throw err
  }
  await chmod(keyPath, 0o600) // the mode of writeFile is masked by the umask and ignored for an existing file
  return { certPath, keyPath, fingerprint: caFingerprint(ca.certPem) }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch {
    return false // absent or unreadable: either way there is nothing to use
  }
}

/** DIR/ca.crt and, when present, DIR/ca.key; undefined when the folder has no CA (a fleet made before issue 7). */
export async function readFleetCa(dir: string): Promise<FleetCa | undefined> {
  const certPath = join(dir, CA_CERT_FILE)
  const keyPath = join(dir, CA_KEY_FILE)
  if (!await fileExists(certPath)) return undefined
  const certPem = await readPem(certPath, 'fleet CA certificate')
  let cert: X509Certificate
  try {
    cert = new X509Certificate(certPem)
  } catch (err) {
    throw new EdgeProxyError('EP_FLEET_CA_INVALID', `${certPath} is not a PEM certificate; recreate the fleet CA with \`edgeproxy fleet init --out DIR --force\``, { cause: err })
  }
  if (!cert.ca) throw new EdgeProxyError('EP_FLEET_CA_INVALID', `${certPath} is not a CA certificate (basicConstraints CA:FALSE); use the ca.crt that \`edgeproxy fleet init\` wrote`)
  const keyPem = await fileExists(keyPath) ? await readPem(keyPath, 'fleet CA key') : undefined
  if (keyPem !== undefined && !matches(cert, keyPem)) {
    throw new EdgeProxyError('EP_FLEET_CA_INVALID', `${keyPath} does not belong to ${certPath}; copy both from the same \`edgeproxy fleet init\``)
  }
  return { certPem, keyPem, cert, certPath, keyPath }
}

function matches(cert: X509Certificate, keyPem: string): boolean {
  try {
    return cert.checkPrivateKey(createPrivateKey(keyPem))
  } catch {
    return false // not a key at all: reported as not matching
  }
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new EdgeProxyError('EP_FLEET_CA_INVALID', `cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
}

/** A short, public name for the CA, logged at start so two nodes' CAs can be compared by eye. */
export function caFingerprint(certPem: string): string {
  return createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex').slice(0, 12)
}
