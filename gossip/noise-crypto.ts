import { createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'

/**
 * Noise's X25519 with the key objects Node needs built cheaply. The default implementation wraps both raw keys
 * in PKCS8/SPKI DER and imports them for every Diffie-Hellman (~1 ms each on this box, and a handshake does
 * three a side); here a key pair this process generates keeps its private KeyObject, and the peer's public key
 * is imported from JWK (~0.1 ms a DH, ~10×). A heal reconnects a hundred links at once on a 20-node fleet,
 * so handshakes are a large share of its CPU (docs/benchmarks.md). Everything else is noise's default.
 */
const generatedPrivateKeys = new WeakMap<Uint8Array, KeyObject>()

function generateX25519KeyPair(): { publicKey: Uint8Array; privateKey: Uint8Array } {
  const { privateKey } = generateKeyPairSync('x25519')
  const jwk = privateKey.export({ format: 'jwk' })
  const pair = { publicKey: fromBase64Url(jwk.x as string), privateKey: fromBase64Url(jwk.d as string) }
  generatedPrivateKeys.set(pair.privateKey, privateKey)
  return pair
}

type KeyBytes = Parameters<ICryptoInterface['generateX25519SharedKey']>[0]

function generateX25519SharedKey(privateKey: KeyBytes, publicKey: KeyBytes): Uint8Array {
  const own = privateKey instanceof Uint8Array ? generatedPrivateKeys.get(privateKey) : undefined
  // a key from elsewhere (a seed-derived static key) has no KeyObject here: a JWK private key needs its public half
  if (own === undefined) return defaultCrypto.generateX25519SharedKey(privateKey, publicKey)
  const raw = publicKey instanceof Uint8Array ? publicKey : publicKey.subarray()
  const theirs = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: toBase64Url(raw) }, format: 'jwk' })
  return diffieHellman({ privateKey: own, publicKey: theirs })
}

export const fastX25519Crypto: ICryptoInterface = { ...defaultCrypto, generateX25519KeyPair, generateX25519SharedKey }

function fromBase64Url(s: string): Uint8Array {
  return Buffer.from(s, 'base64url')
}

function toBase64Url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url')
}
