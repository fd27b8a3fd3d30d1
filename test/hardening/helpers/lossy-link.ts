import net from 'node:net'

/**
 * Packet loss as TCP lives it. TCP never hands an application damaged or missing bytes: a lost segment
 * is sent again after a retransmission timeout, and everything behind it waits (head-of-line blocking).
 * The chaos relay's `byteLoss` drops a chunk outright, which an encrypted stream cannot survive — that is
 * a broken connection, not a lossy one. This relay gives the other kind: each forwarded chunk is "lost"
 * with probability `loss`, and then it and every later chunk of that direction are held for an RTO
 * (200 ms, Linux's minimum, doubling while losses repeat), as a real retransmission would.
 */
export interface LossyLink {
  readonly port: number
  setTarget(target: { host: string; port: number }): void
  setLoss(loss: number): void
  stats(): { chunks: number; lost: number }
  close(): Promise<void>
}

const MIN_RTO_MS = 200
const MAX_RTO_MS = 3_200
const HIGH_WATER = 1024 * 1024

interface Direction {
  queue: Array<{ dueAt: number; chunk: Buffer | null }>
  queued: number
  blockedUntil: number
  rto: number
  timer: NodeJS.Timeout | undefined
}

export async function startLossyLink(host: string, seed = 1): Promise<LossyLink> {
  let target = { host, port: 1 }
  let loss = 0
  let a = seed >>> 0
  const random = (): number => { // mulberry32, seeded: reproducible loss patterns
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const counters = { chunks: 0, lost: 0 }
  const sockets = new Set<net.Socket>()

  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    // keep the caller's address as ours, so that whatever sits behind still knows who calls
    const upstream = net.connect({ host: target.host, port: target.port, localAddress: client.remoteAddress?.replace(/^::ffff:/, ''), allowHalfOpen: true, noDelay: true })
    client.setNoDelay(true)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => { client.destroy(); upstream.destroy() })
      s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy() })
    }
    pipe(client, upstream)
    pipe(upstream, client)
    client.resume()
  })

  function pipe(from: net.Socket, to: net.Socket): void {
    const d: Direction = { queue: [], queued: 0, blockedUntil: 0, rto: MIN_RTO_MS, timer: undefined }
    const flush = (): void => {
      d.timer = undefined
      const now = performance.now()
      while (d.queue.length > 0 && d.queue[0].dueAt <= now) {
        const { chunk } = d.queue.shift()!
        if (chunk === null) { to.end(); continue }
        d.queued -= chunk.byteLength
        if (!to.destroyed) to.write(chunk)
      }
      if (d.queued < HIGH_WATER) from.resume()
      if (d.queue.length > 0) d.timer = setTimeout(flush, Math.max(0, d.queue[0].dueAt - performance.now()))
    }
    const push = (chunk: Buffer | null): void => {
      const now = performance.now()
      if (chunk !== null) {
        counters.chunks++
        if (loss > 0 && random() < loss) {
          counters.lost++
          d.blockedUntil = Math.max(now, d.blockedUntil) + d.rto
          d.rto = Math.min(MAX_RTO_MS, d.rto * 2)
        } else if (now >= d.blockedUntil) {
          d.rto = MIN_RTO_MS
        }
      }
      const last = d.queue.at(-1)?.dueAt ?? 0
      d.queue.push({ dueAt: Math.max(now, d.blockedUntil, last), chunk })
      if (chunk !== null) {
        d.queued += chunk.byteLength
        if (d.queued > HIGH_WATER) from.pause()
      }
      if (d.timer === undefined) d.timer = setTimeout(flush, Math.max(0, d.queue[0].dueAt - now))
    }
    from.on('data', (c: Buffer) => push(c))
    from.on('end', () => push(null))
    from.on('close', () => clearTimeout(d.timer))
  }

  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    setTarget(t) { target = t },
    setLoss(l) { loss = l },
    stats: () => ({ ...counters }),
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
