import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { expect, test } from 'vitest'
import { fastX25519Crypto } from '../noise-crypto.js'

test('X25519 with cached key objects agrees with noise\'s default in both directions', () => {
  for (let i = 0; i < 20; i++) {
    const ours = fastX25519Crypto.generateX25519KeyPair()
    const theirs = defaultCrypto.generateX25519KeyPair()
    expect(ours.publicKey.byteLength).toBe(32)
    expect(ours.privateKey.byteLength).toBe(32)
    const a = fastX25519Crypto.generateX25519SharedKey(ours.privateKey, theirs.publicKey)
    const b = defaultCrypto.generateX25519SharedKey(theirs.privateKey, ours.publicKey)
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true)
  }
})

test('a private key this process did not generate (a copy, a seed-derived static key) still gives the right secret', () => {
  const ours = fastX25519Crypto.generateX25519KeyPair()
  const seeded = fastX25519Crypto.generateX25519KeyPairFromSeed(new Uint8Array(32).fill(7))
  const viaCache = fastX25519Crypto.generateX25519SharedKey(ours.privateKey, seeded.publicKey)
  const viaCopy = fastX25519Crypto.generateX25519SharedKey(Uint8Array.from(ours.privateKey), seeded.publicKey)
  const fromSeedSide = fastX25519Crypto.generateX25519SharedKey(seeded.privateKey, ours.publicKey)
  expect(Buffer.from(viaCopy).equals(Buffer.from(viaCache))).toBe(true)
  expect(Buffer.from(fromSeedSide).equals(Buffer.from(viaCache))).toBe(true)
})
