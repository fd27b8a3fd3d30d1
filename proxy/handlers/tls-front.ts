import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { type SecureContext, TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { ListenerState } from '../proxy-context.js'
import { isHttp } from '../routing/port-plan.js'
import { routeForHost } from '../routing/resolve-route.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import type { ProxyStats } from '../stats.js'
import type { CertStore } from '../tls/cert-store.js'
import { scanClientHello } from '../tls/client-hello.js'

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
 * The `tls` handshake for one public port. The ClientHello is read off the raw stream first
 * (tls/client-hello.ts) and its SNI name picks the certificate (cert-store.ts); the TLSSocket then starts
 * with that secure context alone. Not a tls.Server with a default certificate and an SNICallback: OpenSSL
 * only swaps the certificate slot of the new key type, so an RSA certificate chosen by SNI would sit next
 * to the EC fallback and clients offering ECDSA (nearly all) would be served the fallback.
 * TLS 1.2 and forward-secret AEAD suites are the floor (issue 6, PUBLIC_TLS, in every context).
 * `onSecure` gets each handshaken socket.
 */
export function createTlsFront(listener: ListenerState, deps: TlsFrontDeps, onSecure: (socket: TLSSocket) => void): TlsFront {
  const ALPNCallback = ({ servername, protocols }: { servername: string; protocols: string[] }): string | undefined =>
    chooseAlpn(deps.index, listener, servername, protocols)
  const handshake = (stream: Duplex, onStreamSecure: (socket: TLSSocket) => void): void =>
    runHandshake(stream, listener.publicPort, deps, ALPNCallback, onStreamSecure)
  return {
    accept(socket) { handshake(socket, onSecure) },
    acceptStream: handshake,
  }
}

type AlpnCallback = (arg: { servername: string; protocols: string[] }) => string | undefined

/**
 * handshake: read the ClientHello (bounded by MAX_HELLO_BYTES and the port's handshake timeout), put it
 * back, and run TLS with the context for its server name. Counts tlsHandshakes / tlsHandshakeFailures;
 * one timer covers the whole handshake, ClientHello included.
 */
function runHandshake(stream: Duplex, port: number, deps: TlsFrontDeps, ALPNCallback: AlpnCallback, onSecure: (socket: TLSSocket) => void): void {
  const chunks: Buffer[] = []
  let received = 0
  let need = 1 // bytes in all before scanning again can tell anything new (scanClientHello's `need`)
  let tls: TLSSocket | undefined
  let settled = false
  const fail = (err: NodeJS.ErrnoException): void => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    deps.stats.tlsHandshakeFailures++
    deps.log.debug({ err: err.message, code: err.code, port }, 'TLS handshake failed')
    tls?.destroy()
    stream.destroy()
  }
  const timer = setTimeout(() => fail(codedError('TLS handshake timeout', 'ETIMEDOUT')), deps.handshakeMs)
  const onEnd = (): void => fail(codedError('client closed before its ClientHello', 'ECONNRESET'))
  const onClose = (): void => fail(codedError('socket hang up', 'ECONNRESET'))
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk)
    received += chunk.length
    if (received < need) return // a hello dribbled in small pieces is joined and scanned once per record, not per piece
    // one chunk almost always holds the whole hello: a copy only when it does not
    const hello = chunks.length === 1 ? chunk : Buffer.concat(chunks, received)
    const scan = scanClientHello(hello)
    if (scan.kind === 'partial') {
      need = scan.need
      if (chunks.length > 1) chunks.splice(0, chunks.length, hello)
      return
    }
    stream.removeListener('data', onData)
    stream.pause()
    if (scan.kind === 'invalid') { fail(codedError(scan.reason, 'EP_BAD_CLIENT_HELLO')); return }
    stream.unshift(hello) // the TLSSocket reads it first (node feeds a wrapped stream's buffered bytes in)
    chunks.length = 0
    deps.certs.select(scan.servername, (_err, ctx) => { if (!settled && !stream.destroyed) startTls(ctx ?? deps.certs.defaultContext) })
  }
  const startTls = (secureContext: SecureContext): void => {
    stream.removeListener('end', onEnd)
    // the context carries the selected certificate alone; servername is set by node from the same hello
    const socket = new TLSSocket(stream as Socket, { isServer: true, secureContext, ALPNCallback })
    tls = socket
    // until 'secure', a reset of the raw stream reaches the TLSSocket only as its internal '_tlsError':
    // the raw stream's own 'error' / 'close' (still listened to) end the handshake then
    socket.on('error', fail)
    socket.once('close', onClose)
    socket.once('secure', () => {
      socket.removeListener('error', fail)
      socket.removeListener('close', onClose)
      stream.removeListener('error', fail)
      stream.removeListener('close', onClose)
      if (settled) return
      settled = true
      clearTimeout(timer)
      serverSocketSecure(socket)
      deps.stats.tlsHandshakes++
      onSecure(socket)
    })
  }
  stream.on('data', onData)
  stream.once('end', onEnd)
  stream.once('close', onClose)
  stream.on('error', fail)
  stream.resume()
}

/**
 * What tls.Server does for its sockets on 'secure' (lib/_tls_wrap.js onServerSocketSecure), which a
 * TLSSocket made by hand does not get: errors from here on reach the socket's own 'error' listeners, and
 * `secureConnecting` is cleared (node:http2 waits for a 'secureConnect' a server socket never emits otherwise).
 */
function serverSocketSecure(socket: TLSSocket): void {
  const internal = socket as unknown as { _releaseControl?: () => boolean; secureConnecting: boolean }
  // node internals (checked on Node 20 and 22): absent in some future release, the socket is still usable
  if (typeof internal._releaseControl === 'function') internal._releaseControl()
  internal.secureConnecting = false
}

function codedError(message: string, code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code })
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
