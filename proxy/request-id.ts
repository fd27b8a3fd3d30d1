import { randomFillSync } from 'node:crypto'

/**
 * Request ids: a ULID (48-bit ms timestamp + 80 random bits, Crockford base32, 26 chars) followed by the
 * edge region, as Fly-Request-Id looks (FLY-SPEC §7). Random bytes come from a pool refilled in bulk,
 * and the time part is encoded once per millisecond: the hot path pays a few string lookups.
 */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
/** Every 10-bit value as two base32 characters. */
const PAIRS: string[] = []
for (let i = 0; i < 1024; i++) PAIRS.push(ALPHABET[i >> 5] + ALPHABET[i & 31])

const POOL_BYTES = 4096
const pool = Buffer.allocUnsafe(POOL_BYTES)
let poolOffset = POOL_BYTES

let lastMs = -1
let lastTime = ''

function timePart(ms: number): string {
  if (ms === lastMs) return lastTime
  let t = ms
  let s = ''
  for (let i = 0; i < 10; i++) {
    s = ALPHABET[t % 32] + s
    t = Math.floor(t / 32)
  }
  lastMs = ms
  lastTime = s
  return s
}

export function newRequestId(suffix: string): string {
  if (poolOffset + 10 > POOL_BYTES) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const p = poolOffset
  poolOffset += 10
  // 80 bits as eight 10-bit groups
  const r = PAIRS[((pool[p] << 2) | (pool[p + 1] >> 6)) & 1023]
    + PAIRS[((pool[p + 1] << 4) | (pool[p + 2] >> 4)) & 1023]
    + PAIRS[((pool[p + 2] << 6) | (pool[p + 3] >> 2)) & 1023]
    + PAIRS[((pool[p + 3] << 8) | pool[p + 4]) & 1023]
    + PAIRS[((pool[p + 5] << 2) | (pool[p + 6] >> 6)) & 1023]
    + PAIRS[((pool[p + 6] << 4) | (pool[p + 7] >> 4)) & 1023]
    + PAIRS[((pool[p + 7] << 6) | (pool[p + 8] >> 2)) & 1023]
    + PAIRS[((pool[p + 8] << 8) | pool[p + 9]) & 1023]
  return `${timePart(Date.now())}${r}-${suffix}`
}
