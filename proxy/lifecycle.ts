import type { Socket } from 'node:net'
import { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import type { TlsFront } from './handlers/tls-front.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { handleStream } from './handlers/stream.js'
import { readPgOpening } from './handlers/pg-tls.js'
import { plainIp } from './http/forward-headers.js'
import { Http1Session } from './http/http1-session.js'
import type { ClientInfo, ListenerState, ProxyContext } from './proxy-context.js'
import { isHttp } from './routing/port-plan.js'
import { routeForHost } from './routing/resolve-route.js'

/**
 * One client connection, top to bottom (DESIGN §4): accept → handshake (tls | pg_tls | none) → then the
 * http handler runs route → connect → forward → finish per request (http/http1-session.ts, http/h2-session.ts),
 * and every other handler runs them once for the connection (handlers/stream.ts).
 */
export interface ConnectionDeps extends ProxyContext {
  /** The port's TLS handshake (handlers/tls-front.ts), created when the port's front is tls or pg_tls. */
  tlsFront(listener: ListenerState): TlsFront
  /** HTTP/2 after ALPN h2 (http/h2-session.ts). */
  startH2(socket: TLSSocket, info: ClientInfo, listener: ListenerState): void
}

/** accept: count it, tune it, and pick the handshake the port's plan asks for. */
export function accept(socket: Socket, listener: ListenerState, deps: ConnectionDeps): void {
  deps.stats.connectionsAccepted++
  deps.stats.connectionsOpen++
  socket.once('close', () => { deps.stats.connectionsOpen-- })
  socket.setNoDelay(true)
  if (deps.draining) { socket.destroy(); return }
  const plan = listener.plan
  switch (plan.front) {
    case 'plain': {
      const info = clientInfo(socket, false, undefined)
      if (plan.http) new Http1Session(socket, info, listener, deps).start(undefined)
      else void handleStream(socket, info, listener, 'raw', deps)
      return
    }
    case 'tls':
      deps.tlsFront(listener).accept(socket)
      return
    case 'pg_tls':
      void handshakePg(socket, listener, deps)
      return
  }
}

/** handshake (pg_tls): SSLRequest, `S`, then the port's TLS handshake. */
async function handshakePg(socket: Socket, listener: ListenerState, deps: ConnectionDeps): Promise<void> {
  deps.stats.pgSslRequests++
  try {
    const { opening, prefix } = await readPgOpening(socket, deps.timeouts.handshakeMs)
    if (opening === 'direct-tls' && prefix !== undefined) {
      // the ClientHello's first bytes were read already: the handshake runs over a stream that replays them
      const info = clientInfo(socket, true, undefined)
      deps.tlsFront(listener).acceptStream(replaying(prefix, socket), (tls) => afterTls(tls, listener, deps, info))
      return
    }
    deps.tlsFront(listener).accept(socket)
  } catch (err) {
    const e = EdgeProxyError.from(err)
    deps.log.debug({ err: e.message, port: listener.publicPort }, 'pg_tls opening refused')
    socket.destroy()
  }
}

/** After TLS: the app named by SNI decides between http (h1 or h2 by ALPN) and a stream. */
export function afterTls(socket: TLSSocket, listener: ListenerState, deps: ConnectionDeps, over?: ClientInfo): void {
  const servername = typeof socket.servername === 'string' ? socket.servername : undefined
  const info = over === undefined ? clientInfo(socket, true, servername) : { ...over, servername }
  const route = routeForHost(deps.index, listener, servername?.toLowerCase() ?? '', false)
  if (!(route instanceof EdgeProxyError)) {
    const versions = route.port.tls_options?.versions
    const protocol = socket.getProtocol()
    if (versions !== undefined && protocol !== null && !versions.includes(protocol as 'TLSv1.2' | 'TLSv1.3')) {
      deps.log.debug({ protocol, app: route.service.app }, 'TLS version not allowed by tls_options.versions')
      socket.destroy()
      return
    }
  }
  const http = route instanceof EdgeProxyError ? listener.plan.http && listener.plan.front === 'tls' : isHttp(route)
  if (http) {
    if (socket.alpnProtocol === 'h2') deps.startH2(socket, info, listener)
    else new Http1Session(socket, info, listener, deps).start(undefined)
    return
  }
  void handleStream(socket, info, listener, listener.plan.front === 'pg_tls' ? 'postgres' : 'raw', deps)
}

export function clientInfo(socket: Socket, tls: boolean, servername: string | undefined): ClientInfo {
  return {
    ip: plainIp(socket.remoteAddress),
    port: socket.remotePort ?? 0,
    localAddress: plainIp(socket.localAddress),
    localPort: socket.localPort ?? 0,
    tls,
    servername,
  }
}

/** `prefix`, then everything the socket reads; writes go to the socket. */
function replaying(prefix: Buffer, socket: Socket): Duplex {
  const stream = new Duplex({
    read() { socket.resume() },
    write(chunk: Buffer, _enc, cb) { socket.write(chunk, cb) },
    final(cb) { socket.end(); cb() },
    destroy(err, cb) { socket.destroy(); cb(err) },
  })
  stream.push(prefix)
  socket.on('data', (chunk: Buffer) => { if (!stream.push(chunk)) socket.pause() })
  socket.once('end', () => stream.push(null))
  socket.once('close', () => stream.destroy())
  return stream
}
