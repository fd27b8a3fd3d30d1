import { decode, encode } from 'cborg'
import type { z } from 'zod'

/**
 * CBOR on the wire: Automerge bytes stay bytes (JSON would base64 them), and decoding is strict so one value
 * has one encoding. Every decode checks the size first, then the CBOR, then the schema — the three reasons a
 * peer's message is dropped before it reaches the catalog.
 */
export type WireDropReason = 'oversize' | 'malformed' | 'wrong-type'

export type WireDecoded<T> =
  | { ok: true; value: T }
  | { ok: false; reason: WireDropReason; detail: string }

const STRICT = {
  strict: true,
  rejectDuplicateMapKeys: true,
  allowUndefined: false,
  allowIndefinite: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
} as const

export function encodeWire(value: unknown): Uint8Array {
  return encode(value)
}

export function decodeWire<S extends z.ZodType>(schema: S, bytes: Uint8Array, maxBytes: number): WireDecoded<z.infer<S>> {
  if (bytes.byteLength > maxBytes) return { ok: false, reason: 'oversize', detail: `${bytes.byteLength} bytes > limit ${maxBytes}` }
  let raw: unknown
  try {
    raw = decode(bytes, STRICT)
  } catch (err) {
    return { ok: false, reason: 'malformed', detail: `not CBOR: ${(err as Error).message}` }
  }
  const parsed = schema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    return { ok: false, reason: 'wrong-type', detail: `${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}` }
  }
  return { ok: true, value: parsed.data }
}
