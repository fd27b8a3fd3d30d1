/**
 * A peer's RTT as the least of its last few pings: a windowed minimum, the estimate BBR (min_rtt) and Linux's
 * RACK keep of a path. A ping waits for both ends' event loops as well as for the wire, so a ping that lands on a
 * busy moment (a heal, a burst of handshakes, a GC pause) measures the load of a node, not its distance; an
 * average carries such a spike for many periods, and one spike on a near peer could rank it behind a far one.
 * A route that really got longer shows once every shorter sample has left the window.
 */
export class RttWindow {
  private readonly samples: number[] = []
  private next = 0
  /** The least sample in the window; read per request by routing, so kept rather than computed. */
  value: number

  constructor(private readonly size: number, first: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`RTT window size must be a positive integer, got ${size}`)
    this.samples.push(first)
    this.next = 1 % size
    this.value = first
  }

  /** Until the window is full, one busy moment may be all it has seen (pings at connect come with the handshake). */
  get full(): boolean { return this.samples.length === this.size }

  add(ms: number): void {
    if (this.samples.length < this.size) this.samples.push(ms)
    else this.samples[this.next] = ms
    this.next = (this.next + 1) % this.size
    let least = Infinity
    for (const s of this.samples) if (s < least) least = s
    this.value = least
  }
}
