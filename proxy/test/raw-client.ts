import { connect, type Socket } from 'node:net'

/** Sends raw bytes and collects everything until the proxy closes the connection (or `timeoutMs`). */
export function rawExchange(port: number, data: string | Buffer | Array<string | Buffer>, opts: { timeoutMs?: number; halfClose?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
    const chunks: Buffer[] = []
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no close within ${opts.timeoutMs ?? 5000} ms; got: ${Buffer.concat(chunks).toString('latin1')}`)) }, opts.timeoutMs ?? 5000)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => { /* a reset still resolves with what arrived */ })
    socket.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks).toString('latin1')) })
    socket.on('end', () => socket.end())
    socket.on('connect', () => {
      for (const part of Array.isArray(data) ? data : [data]) socket.write(part)
      if (opts.halfClose === true) socket.end()
    })
  })
}

/** An open connection for step-by-step tests: read until a predicate holds. */
export class RawConnection {
  private buf = ''
  private waiters: Array<() => void> = []
  closed = false
  readonly socket: Socket

  private constructor(socket: Socket) {
    this.socket = socket
    socket.on('data', (c: Buffer) => { this.buf += c.toString('latin1'); this.wake() })
    socket.on('error', () => { /* close follows */ })
    socket.on('end', () => socket.end()) // like real clients: the proxy's FIN ends the conversation
    socket.on('close', () => { this.closed = true; this.wake() })
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
      s.once('connect', () => resolve(new RawConnection(s)))
      s.once('error', reject)
    })
  }

  get received(): string { return this.buf }

  write(data: string | Buffer): void { this.socket.write(data) }

  /** Waits until `test(received)` is true or the connection closed; rejects after timeoutMs. */
  async until(test: (received: string) => boolean, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs
    while (!test(this.buf)) {
      if (this.closed) return this.buf
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out; received so far: ${JSON.stringify(this.buf)}`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(t); resolve() })
      })
    }
    return this.buf
  }

  /** Removes and returns what has been received so far. */
  take(): string {
    const out = this.buf
    this.buf = ''
    return out
  }

  close(): void { this.socket.destroy() }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
}

/** Count of complete HTTP responses (status lines) in a byte string. */
export function countResponses(text: string): number {
  return (text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length
}
