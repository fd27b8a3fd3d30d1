import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { createServer, type Server, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { CatalogReader } from '../../catalog/catalog-api.js'
import { BACKHAUL_ALPN } from '../../schemas/backhaul.js'
import { directConnector, type MachineConnector } from '../machine-connector.js'
import { type BackhaulListenerStats, newListenerStats } from './listener-stats.js'
import { type BackhaulTls, peerNodeName, peerProblem, serverTlsOptions } from './tls-options.js'
import { WorkerConnection } from './worker-connection.js'
import { catalogTargets } from './worker-targets.js'

export interface BackhaulListenerInit {
  host: string
  /** 0: any free port (the bound one is published in the node record). */
  port: number
  tls: BackhaulTls
  /** A TLS handshake must finish within this (default 10 s): a silent or plain-TCP client is dropped. */
  handshakeMs?: number
  /** A connection on which nothing arrived for this long is closed (default 60 s; edges ping every 5 s). */
  idleMs?: number
  /** stop(): open streams may finish within this (default 5 s). */
  drainMs?: number
  /** The worker's own connect to a Machine (default 5 s). */
  connectTimeoutMs?: number
}

export interface BackhaulListenerComponents {
  catalog: Pick<CatalogReader, 'nodeName' | 'getMachine' | 'getApp'>
  log: Logger
  /** How this node reaches its Machines (default: directConnector, as the proxy's own connect phase). */
  local?: MachineConnector
}

/** Where the listener counts the streams it holds open to each local Machine (the proxy's ForwardedLoad). */
export interface ForwardedLoadSink {
  add(machineId: string, delta: 1 | -1): void
}

export interface BackhaulListener {
  start(): Promise<void>
  stop(): Promise<void>
  /** From now on, streams to local Machines count into `sink` (autostop must not stop a Machine other edges use). */
  countLoadInto(sink: ForwardedLoadSink): void
  /** host:port actually bound (after start). */
  address(): string
  stats(): BackhaulListenerStats
}

/**
 * A worker's backhaul listener (issue 7): TLS 1.3 with a client certificate from the fleet CA required,
 * then frames (worker-connection.ts). Nothing reaches a Machine without a completed mutual handshake:
 * a plain TCP client, a TLS client without a certificate or with one from another CA fails in the
 * handshake, before any frame is read.
 */
export function backhaulListener(init: BackhaulListenerInit) {
  return (c: BackhaulListenerComponents): BackhaulListener => new DefaultBackhaulListener(init, c)
}

class DefaultBackhaulListener implements BackhaulListener {
  private readonly counters = newListenerStats()
  private readonly connections = new Set<WorkerConnection>()
  private server: Server | undefined
  private sweeper: NodeJS.Timeout | undefined
  private bound = ''
  private loadSink: ForwardedLoadSink | undefined

  constructor(private readonly init: BackhaulListenerInit, private readonly c: BackhaulListenerComponents) {}

  async start(): Promise<void> {
    if (this.server !== undefined) return
    const deps = {
      targets: catalogTargets(this.c.catalog),
      local: this.c.local ?? directConnector({ connectTimeoutMs: this.init.connectTimeoutMs }),
      stats: this.counters,
      log: this.c.log,
      countLoad: (machineId: string, delta: 1 | -1) => this.loadSink?.add(machineId, delta),
    }
    const server = createServer(serverTlsOptions(this.init.tls, this.init.handshakeMs ?? 10_000))
    server.on('secureConnection', (socket: TLSSocket) => this.accept(socket, deps))
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      this.counters.handshakeFailures++
      // info, not debug: a refused certificate is the first thing to look for when a node cannot join
      this.c.log.info({ err: err.code ?? err.message, from: socket.remoteAddress }, 'backhaul handshake refused')
      socket.destroy()
    })
    server.on('error', (err) => this.c.log.error({ err }, 'backhaul listener failed'))
    server.listen(this.init.port, this.init.host)
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err })])
    this.server = server
    const a = server.address() as AddressInfo
    this.bound = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
    const idleMs = this.init.idleMs ?? 60_000
    this.sweeper = setInterval(() => {
      for (const conn of [...this.connections]) {
        if (!conn.heard) conn.close(`nothing received for ${idleMs} ms`)
        else conn.heard = false
      }
    }, idleMs)
    this.sweeper.unref()
    this.c.log.info({ listen: this.bound }, 'backhaul listening (mutual TLS 1.3, fleet CA only)')
  }

  async stop(): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    clearInterval(this.sweeper)
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const conn of this.connections) conn.drain()
    const deadline = Date.now() + (this.init.drainMs ?? 5000)
    while (this.openStreams() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    for (const conn of [...this.connections]) conn.close('this node is shutting down')
    await closed
  }

  address(): string { return this.bound }

  countLoadInto(sink: ForwardedLoadSink): void { this.loadSink = sink }

  stats(): BackhaulListenerStats { return { ...this.counters } }

  private openStreams(): number {
    let n = 0
    for (const conn of this.connections) n += conn.streamCount
    return n
  }

  private accept(socket: TLSSocket, deps: ConstructorParameters<typeof WorkerConnection>[2]): void {
    // TLS checked the chain against the fleet CA; what is left: the protocol, and that the certificate is a node's
    if (socket.alpnProtocol !== BACKHAUL_ALPN) return this.reject(socket, `ALPN ${String(socket.alpnProtocol)} instead of ${BACKHAUL_ALPN}`)
    const cert = socket.getPeerCertificate()
    const problem = !socket.authorized ? new Error(String(socket.authorizationError)) : peerProblem(cert, undefined, 'client')
    if (problem !== undefined) return this.reject(socket, problem.message)
    this.counters.connectionsAccepted++
    this.counters.connectionsOpen++
    const conn = new WorkerConnection(socket, peerNodeName(cert), deps, (cc) => this.connections.delete(cc))
    this.connections.add(conn)
    if (this.server === undefined) conn.drain() // arrived while stopping
  }

  private reject(socket: TLSSocket, why: string): void {
    this.counters.peersRejected++
    this.c.log.warn({ from: socket.remoteAddress, why }, 'backhaul peer rejected')
    socket.destroy()
  }
}
