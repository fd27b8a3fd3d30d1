import 'reflect-metadata' // @peculiar/x509 needs a Reflect polyfill loaded before it
import * as x509 from '@peculiar/x509'
import { randomBytes, webcrypto } from 'node:crypto'

export interface PemPair {
  certPem: string
  keyPem: string
}

type SelfSignedParams = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const DAY_MS = 86_400_000

/**
 * A self-signed ECDSA P-256 certificate for one host name (issue 6: the default when no certificate was
 * added for it). Browsers warn about it; `edgeproxy certs add` replaces it.
 */
export async function selfSignedCertificate(hostname: string, validDays = 365): Promise<PemPair> {
  const keys = await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'), // positive serial
    name: `CN=${hostname.replace(/[,=+<>#;\\"]/g, '')}`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + validDays * DAY_MS),
    signingAlgorithm: EC_P256,
    keys: keys as unknown as SelfSignedParams['keys'],
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: hostname }]),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ],
  }, webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[1])
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') }
}
