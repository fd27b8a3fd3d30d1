import { createHash } from 'node:crypto'
import * as A from '@automerge/automerge'

/**
 * The hash, dependency count and actor of an Automerge change read from its chunk header, without decoding its ops
 * (A.decodeChange decodes everything, and was a tenth of a node's CPU while a heal's changes arrived).
 * A change chunk is: magic (4 bytes), checksum (4), type (1: change), body length (uLEB128), body; its hash is
 * sha256 of everything after the checksum, whose first 4 bytes are the checksum, so a wrong reading of the
 * format cannot pass unnoticed: anything else (a compressed chunk, other bytes) gives undefined, and the
 * caller decodes the change instead.
 */
export interface ChangeHeader {
  hash: string
  deps: number
  /** Hex, as A.decodeChange gives it. */
  actor: string
}

const MAGIC = [0x85, 0x6f, 0x4a, 0x83]
const CHANGE_CHUNK = 1

export function readChangeHeader(bytes: Uint8Array): ChangeHeader | undefined {
  if (bytes.byteLength < 10 || bytes[8] !== CHANGE_CHUNK) return undefined
  for (let i = 0; i < 4; i++) if (bytes[i] !== MAGIC[i]) return undefined
  const length = readUleb(bytes, 9)
  if (length === undefined || length.next + length.value !== bytes.byteLength) return undefined
  const hash = createHash('sha256').update(bytes.subarray(8)).digest()
  for (let i = 0; i < 4; i++) if (hash[i] !== bytes[4 + i]) return undefined
  // the body starts: dependency count, the dependencies' 32-byte hashes, the actor (length, bytes)
  const deps = readUleb(bytes, length.next)
  if (deps === undefined) return undefined
  const actorLength = readUleb(bytes, deps.next + 32 * deps.value)
  if (actorLength === undefined || actorLength.next + actorLength.value > bytes.byteLength) return undefined
  const actor = Buffer.from(bytes.buffer, bytes.byteOffset + actorLength.next, actorLength.value).toString('hex')
  return { hash: hash.toString('hex'), deps: deps.value, actor }
}

/** The header read from the bytes, or from decoding the whole change when they are not plain (throws if invalid). */
export function changeHeader(bytes: Uint8Array): ChangeHeader {
  const header = readChangeHeader(bytes)
  if (header !== undefined) return header
  const decoded = A.decodeChange(bytes)
  return { hash: decoded.hash, deps: decoded.deps.length, actor: decoded.actor }
}

function readUleb(bytes: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0
  for (let shift = 0, i = at; i < bytes.byteLength && shift < 35; shift += 7, i++) {
    value += (bytes[i] & 0x7f) * 2 ** shift
    if ((bytes[i] & 0x80) === 0) return { value, next: i + 1 }
  }
  return undefined
}
