import type { Socket } from 'node:net'

/**
 * Idle keep-alive connections to Machines, last in first out (the warmest socket is reused and the
 * coldest ones age out). Keyed by address then port: two Map lookups, no key string per request.
 */
export interface PooledConnection {
  readonly socket: Socket
  readonly host: string
  readonly port: number
  /** Clock value when it went idle. */
  idleSince: number
}

export interface UpstreamPoolInit {
  /** Below the Machine's own keep-alive timeout (Node's default is 5 s; Fly keeps ~4 s: FLY-SPEC §3). */
  idleTimeoutMs?: number
  maxIdlePerTarget?: number
}

export class UpstreamPool<C extends PooledConnection> {
  private readonly idle = new Map<string, Map<number, C[]>>()
  readonly idleTimeoutMs: number
  private readonly maxIdle: number
  size = 0

  constructor(init: UpstreamPoolInit = {}) {
    this.idleTimeoutMs = init.idleTimeoutMs ?? 4000
    this.maxIdle = init.maxIdlePerTarget ?? 256
  }

  take(host: string, port: number): C | undefined {
    const list = this.idle.get(host)?.get(port)
    if (list === undefined) return undefined
    while (list.length > 0) {
      const c = list.pop()!
      this.size--
      if (!c.socket.destroyed) return c
    }
    return undefined
  }

  /** Returns false when the pool is full (the caller closes the connection). */
  put(c: C, now: number): boolean {
    let ports = this.idle.get(c.host)
    if (ports === undefined) { ports = new Map(); this.idle.set(c.host, ports) }
    let list = ports.get(c.port)
    if (list === undefined) { list = []; ports.set(c.port, list) }
    if (list.length >= this.maxIdle) return false
    c.idleSince = now
    list.push(c)
    this.size++
    return true
  }

  /** A pooled connection closed by the Machine leaves the pool. */
  remove(c: C): void {
    const list = this.idle.get(c.host)?.get(c.port)
    if (list === undefined) return
    const i = list.indexOf(c)
    if (i >= 0) { list.splice(i, 1); this.size-- }
  }

  /** Closes connections idle longer than the timeout; the oldest are at the bottom of each stack. */
  sweep(now: number): void {
    for (const ports of this.idle.values()) {
      for (const list of ports.values()) {
        let expired = 0
        while (expired < list.length && now - list[expired].idleSince >= this.idleTimeoutMs) expired++
        if (expired === 0) continue
        const old = list.splice(0, expired)
        this.size -= expired
        for (const c of old) c.socket.destroy()
      }
    }
  }

  closeAll(): void {
    for (const ports of this.idle.values()) for (const list of ports.values()) for (const c of list) c.socket.destroy()
    this.idle.clear()
    this.size = 0
  }
}
