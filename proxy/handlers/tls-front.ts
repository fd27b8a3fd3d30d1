import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Server as TlsServer, TLSSocket, type TlsOptions } from 'node:tls'
import type { Logger } from 'pino'
import type { ListenerState } from '../proxy-context.js'
import { isHttp } from '../routing/port-plan.js'
import { routeForHost } from '../routing/resolve-route.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import type { ProxyStats } from '../stats.js'
import { type CertStore, PUBLIC_TLS } from '../tls/cert-store.js'

/** FLY-SPEC §2 tls_options.alpn: our default when the http handler follows TLS. */
export const DEFAULT_HTTP_ALPN = ['h2', 'http/1.1'] as const

export interface TlsFrontDeps {
  certs: CertStore
  index: RoutingIndex
  stats: ProxyStats
  log: Logger
  handshakeMs: number
}

/** A port's TLS handshake (handlers/tls-front.ts). */
export interface TlsFront {
  /** Takes an accepted TCP socket and runs the handshake on it. */
  accept(socket: Socket): void
  /** Runs the handshake over any byte stream (direct TLS, after its first bytes were read). */
  acceptStream(stream: Duplex, onSecure: (socket: TLSSocket) => void): void
}

/**
 * The `tls` handshake for one public port: a tls.Server that never listens; accepted sockets are handed
 * to it with emit('connection'). SNI picks the certificate (cert-store.ts) and the app's ALPN list;
 * TLS 1.2 and forward-secret AEAD suites are the floor (issue 6, PUBLIC_TLS). `onSecure` gets each handshaken socket.
 */
export function createTlsFront(listener: ListenerState, deps: TlsFrontDeps, onSecure: (socket: TLSSocket) => void): TlsFront {
  const options: TlsOptions = {
    SNICallback: (name, cb) => deps.certs.select(name, cb),
    ALPNCallback: ({ servername, protocols }) => chooseAlpn(deps.index, listener, servername, protocols),
    // used when the client sends no SNI (an IP address, libpq): the fallback certificate
    cert: deps.certs.defaultPem.certPem,
    key: deps.certs.defaultPem.keyPem,
    ...PUBLIC_TLS,
    handshakeTimeout: deps.handshakeMs,
    allowHalfOpen: true,
  }
  const server = new TlsServer(options)
  const failed = (err: NodeJS.ErrnoException, socket: { destroy(): void }): void => {
    deps.stats.tlsHandshakeFailures++
    deps.log.debug({ err: err.message, code: err.code, port: listener.publicPort }, 'TLS handshake failed')
    socket.destroy()
  }
  server.on('secureConnection', (socket: TLSSocket) => {
    deps.stats.tlsHandshakes++
    onSecure(socket)
  })
  server.on('tlsClientError', failed)
  return {
    accept(socket) { server.emit('connection', socket) },
    acceptStream(stream, onStreamSecure) {
      const socket = new TLSSocket(stream as Socket, { ...options, isServer: true, server, secureContext: undefined })
      const timer = setTimeout(() => failed(Object.assign(new Error('TLS handshake timeout'), { code: 'ETIMEDOUT' }), socket), deps.handshakeMs)
      socket.once('secure', () => {
        clearTimeout(timer)
        deps.stats.tlsHandshakes++
        onStreamSecure(socket)
      })
      socket.once('error', (err) => { clearTimeout(timer); failed(err, socket) })
    },
  }
}

/** Server preference order over the client's offer; undefined fails the handshake (no_application_protocol). */
export function chooseAlpn(index: RoutingIndex, listener: ListenerState, servername: string | false | undefined, offered: string[]): string | undefined {
  // servername is undefined or false without SNI, depending on how the socket was made
  const route = routeForHost(index, listener, typeof servername === 'string' ? servername.toLowerCase() : '', false)
  let wanted: readonly string[] | undefined
  if (route instanceof Error) wanted = listener.plan.http ? DEFAULT_HTTP_ALPN : undefined
  else wanted = route.port.tls_options?.alpn ?? (isHttp(route) ? DEFAULT_HTTP_ALPN : undefined)
  if (wanted === undefined) return offered[0] // raw TLS: the protocol is the app's business
  for (const p of wanted) if (offered.includes(p)) return p
  return undefined
}
