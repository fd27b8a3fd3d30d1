import { createHash } from 'node:crypto'
import type { DocId } from '../schemas/catalog-records.js'

/**
 * One 32-byte summary of the anti-entropy digest `{docId → heads}`: the XOR of sha256(`docId=heads`) over the
 * documents. Two nodes with equal hashes hold the same heads for every document. XOR makes it order-free and
 * cheap to keep current: a batch that changes k documents costs k hashes, not a pass over the whole catalog,
 * so a node can afford to know it after every change (gossip compares it with peers' heartbeats).
 */
export const DIGEST_HASH_BYTES = 32

export function docContribution(docId: DocId, sortedHeads: readonly string[]): Buffer {
  return createHash('sha256').update(`${docId}=${sortedHeads.join(',')}`).digest()
}

export function xorInto(acc: Uint8Array, contribution: Uint8Array): void {
  for (let i = 0; i < DIGEST_HASH_BYTES; i++) acc[i] ^= contribution[i]
}

/** The digest hash of a whole digest, computed from scratch (tests, a peer's digest). */
export function digestHashOf(digest: ReadonlyMap<DocId, readonly string[]>): Uint8Array {
  const acc = new Uint8Array(DIGEST_HASH_BYTES)
  for (const [docId, heads] of digest) xorInto(acc, docContribution(docId, [...heads].sort()))
  return acc
}

/** The running digest hash of this node's documents, updated per changed document. */
export class DigestHashAccumulator {
  private readonly acc = new Uint8Array(DIGEST_HASH_BYTES)
  private readonly parts = new Map<DocId, Buffer>()
  /** Wall-clock ms when the hash last took a new value: when this node came to hold what it holds now. */
  changedAt = Date.now()

  /** `sortedHeads` undefined: the document is not in the digest (not yet durable, or quarantined). */
  set(docId: DocId, sortedHeads: readonly string[] | undefined): void {
    const old = this.parts.get(docId)
    const part = sortedHeads === undefined ? undefined : docContribution(docId, sortedHeads)
    if (old === part || (old !== undefined && part !== undefined && old.equals(part))) return
    this.changedAt = Date.now()
    if (old !== undefined) {
      xorInto(this.acc, old)
      this.parts.delete(docId)
    }
    if (part === undefined) return
    xorInto(this.acc, part)
    this.parts.set(docId, part)
  }

  /** A copy: callers keep it as a past state while this one moves on. */
  current(): Uint8Array {
    return this.acc.slice()
  }
}
