/**
 * The request body as it went to the Machine, kept so a fly-replay can send it again. The chunks are the
 * very buffers that were forwarded (no copy). Past the limit (`limits.maxReplayBodyBytes`: 10 MiB, as Fly's
 * PA01) they are dropped and the body counts as too large. Bodyless requests and bodies that fit the first
 * write cost nothing here.
 */
export class KeptBody {
  private parts: Buffer[] = []
  private bytes = 0
  /** More than `limit` bytes went by: a replay cannot resend this body. */
  overflow = false

  constructor(readonly limit: number) {}

  /** A new request; `first` is what went with its head (undefined for none). */
  begin(first: Buffer | undefined): void {
    if (this.parts.length > 0) this.parts = [] // bodyless requests allocate nothing
    this.bytes = 0
    this.overflow = false
    if (first !== undefined) this.add(first)
  }

  add(chunk: Buffer): void {
    if (this.overflow || chunk.length === 0) return
    this.bytes += chunk.length
    if (this.bytes > this.limit) {
      this.overflow = true
      this.parts = []
      return
    }
    this.parts.push(chunk)
  }

  get size(): number { return this.bytes }

  /** The whole body in one buffer (the request is sent in one write), or undefined when there is none. */
  take(): Buffer | undefined {
    const parts = this.parts
    if (parts.length === 0) return undefined
    if (parts.length > 1) this.parts = [Buffer.concat(parts, this.bytes)]
    return this.parts[0]
  }
}
