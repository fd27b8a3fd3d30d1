/**
 * Per-peer token buckets: a peer may send `burst` messages at once and `perSecond` on average; beyond that
 * its messages are dropped (throttled, not obeyed). Hand-written rather than @libp2p/utils' RateLimiter,
 * which throws on every refusal and arms a timer per key — both costly exactly when a peer floods.
 */
export interface ThrottleInit {
  perSecond: number
  burst: number
  /** Buckets untouched this long are forgotten, so departed peers cost no memory. */
  idleMs?: number
  now?: () => number
}

interface Bucket { tokens: number; at: number }

export class Throttle {
  private readonly buckets = new Map<string, Bucket>()
  private readonly now: () => number
  private lastSweep: number

  constructor(private readonly init: ThrottleInit) {
    this.now = init.now ?? (() => performance.now())
    this.lastSweep = this.now()
  }

  /** Takes one token for `key`; false when the bucket is empty. */
  take(key: string): boolean {
    const now = this.now()
    this.sweep(now)
    let b = this.buckets.get(key)
    if (b === undefined) {
      b = { tokens: this.init.burst, at: now }
      this.buckets.set(key, b)
    } else {
      b.tokens = Math.min(this.init.burst, b.tokens + ((now - b.at) / 1000) * this.init.perSecond)
      b.at = now
    }
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  get size(): number { return this.buckets.size }

  private sweep(now: number): void {
    const idleMs = this.init.idleMs ?? 60_000
    if (now - this.lastSweep < idleMs) return
    this.lastSweep = now
    for (const [key, b] of this.buckets) if (now - b.at >= idleMs) this.buckets.delete(key)
  }
}
