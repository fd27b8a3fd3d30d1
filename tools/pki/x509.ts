import 'reflect-metadata' // @peculiar/x509 needs a Reflect polyfill loaded before it
import * as x509 from '@peculiar/x509'
import { randomBytes, webcrypto } from 'node:crypto'

/**
 * The one place the fleet PKI touches @peculiar/x509 (certificate building; no hand-rolled ASN.1) and
 * WebCrypto. Every key is ECDSA P-256: small certificates and the cheapest TLS 1.3 handshake signatures.
 */
export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
export const DAY_MS = 86_400_000

export type Crypto = Parameters<typeof x509.X509CertificateGenerator.create>[1]
export const crypto = webcrypto as unknown as Crypto
type CryptoKeyPair = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys']
type CryptoKey = CryptoKeyPair['privateKey']

export interface PemPair {
  certPem: string
  keyPem: string
}

export async function generateKeys(): Promise<CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']) as unknown as CryptoKeyPair
}

export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key as unknown as webcrypto.CryptoKey)
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')
}

/** A PKCS#8 PEM key (what privateKeyPem wrote) back into a signing key. */
export async function importSigningKey(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decode(pem)[0]
  if (der === undefined) throw new Error('no PEM block')
  return await webcrypto.subtle.importKey('pkcs8', der, EC_P256, false, ['sign']) as unknown as CryptoKey
}

/** A positive serial number of 16 random bytes (RFC 5280 §4.1.2.2: positive, at most 20 octets). */
export function serialNumber(): string {
  const bytes = randomBytes(16)
  bytes[0] &= 0x7f
  bytes[0] |= 0x01
  return bytes.toString('hex')
}

/** Characters that would change the meaning of an RFC 4514 name are dropped (names are validated earlier). */
export function rdnValue(value: string): string {
  return value.replace(/[,=+<>#;\\"]/g, '')
}

export { x509 }
