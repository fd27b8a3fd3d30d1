import { connect, type Socket } from 'node:net'
import { EdgeProxyError } from '../schemas/errors.js'
import { proxyProtocolHeader } from './handlers/proxy-proto.js'
import type { ClientInfo } from './proxy-context.js'
import type { RoutableMachine } from './routing/routable-machine.js'

/**
 * "Where to connect" (DESIGN §4 connect phase). Today every Machine is reached at its private address on
 * this host. The backhaul issue adds a connector that reaches Machines of other nodes over mTLS; the
 * proxy only ever sees a connected Socket.
 */
export interface MachineConnector {
  /**
   * Opens a stream to `port` of the Machine; `done` runs exactly once. The socket may be a backhaul stream
   * standing in for one (proxy/backhaul/): only stream methods and `setNoDelay` may be used on it.
   */
  connect(machine: RoutableMachine, port: number, done: (err: EdgeProxyError | undefined, socket: Socket | undefined) => void, facts?: ConnectFacts): void
}

/**
 * What the hop that opens the Machine's connection needs to know about the client (issue 7): the PROXY
 * header is written by whoever connects to the Machine — this node, or the worker at the far end of the
 * backhaul — always with the original client's address.
 */
export interface ConnectFacts {
  readonly client: ClientInfo
  /** The port's proxy_proto handler: the header goes first on the Machine connection. */
  readonly proxyProto?: 'v1' | 'v2'
  readonly reqId?: string
  /**
   * A direct connection reads the Machine's bytes into one buffer of its own (net.connect `onread`, 64 KiB,
   * net's read size) and hands each read to this sink, instead of a fresh Buffer per read: a relay that
   * copies them straight out saves the allocation and the GC (2.4× less CPU per relayed GiB, bench notes in
   * docs/benchmarks.md). A set `socket` tells the caller that the sink is in use; a backhaul stream ignores
   * it and emits 'data' as usual.
   */
  readonly readSink?: MachineReadSink
}

export interface MachineReadSink {
  /** Gets each read (valid until it returns true); returns false to stop reading until the caller resumes the socket. */
  readonly callback: (n: number, buf: Buffer) => boolean
  /** The connected socket that reads into the sink (set by the connector). */
  socket?: Socket
}

export interface DirectConnectorInit {
  /** A Machine that does not accept within this time is unreachable. */
  connectTimeoutMs?: number
}

/** Bytes per read into a MachineReadSink's buffer (net's own default read size). */
const READ_BYTES = 64 * 1024

/** Connects straight to `privateAddr:port` (every Machine is local on one host). */
export function directConnector(init: DirectConnectorInit = {}): MachineConnector {
  const timeoutMs = init.connectTimeoutMs ?? 5000
  return {
    connect(machine, port, done, facts) {
      const host = machine.privateAddr
      if (host === undefined) {
        done(new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${machine.id} has no private address yet`), undefined)
        return
      }
      const sink = facts?.readSink
      const socket = connect({ host, port, noDelay: true, ...(sink === undefined ? {} : { onread: { buffer: Buffer.allocUnsafe(READ_BYTES), callback: sink.callback } }) })
      let settled = false
      const finish = (err: EdgeProxyError | undefined): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.removeListener('error', onError)
        if (err !== undefined) { socket.destroy(); done(err, undefined); return }
        if (facts?.proxyProto !== undefined) socket.write(proxyHeaderFor(facts.proxyProto, facts.client))
        if (sink !== undefined) sink.socket = socket
        done(undefined, socket)
      }
      const onError = (err: NodeJS.ErrnoException): void => finish(unreachable(machine, host, port, err))
      const timer = setTimeout(() => finish(new EdgeProxyError('EP_MACHINE_UNREACHABLE',
        `Machine ${machine.id} did not accept a connection on ${host}:${port} within ${timeoutMs} ms`)), timeoutMs)
      socket.once('connect', () => finish(undefined))
      socket.on('error', onError)
    },
  }
}

/** source = the client, destination = the address and port it dialled (FLY-SPEC §7). */
export function proxyHeaderFor(version: 'v1' | 'v2', client: ClientInfo): Buffer {
  return proxyProtocolHeader(version, { sourceIp: client.ip, sourcePort: client.port, destIp: client.localAddress, destPort: client.localPort })
}

/** Names the likely mistake (FLY-SPEC §10: apps bound to the wrong address get a bare PC01). */
export function unreachable(machine: RoutableMachine, host: string, port: number, err: NodeJS.ErrnoException): EdgeProxyError {
  const hint = err.code === 'ECONNREFUSED'
    ? `nothing listens on ${host}:${port}; the app must listen on its internal_port on all addresses (0.0.0.0), not 127.0.0.1`
    : `${err.code ?? err.message}`
  return new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${machine.id} refused the connection: ${hint}`, { cause: err })
}
