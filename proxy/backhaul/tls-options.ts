import type { PeerCertificate, ConnectionOptions as TlsConnectionOptions, TlsOptions } from 'node:tls'
import { BACKHAUL_ALPN } from '../../schemas/backhaul.js'

/** This node's fleet certificate and the fleet CA (PEM); tools/pki makes them, tools/daemon.ts passes them in. */
export interface BackhaulTls {
  certPem: string
  keyPem: string
  caPem: string
}

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2'
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1'

/**
 * The worker's listener: TLS 1.3 only, a client certificate required and checked against the fleet CA
 * alone (not the system roots), the backhaul ALPN. Whatever fails here never reaches a frame parser.
 */
export function serverTlsOptions(t: BackhaulTls, handshakeMs: number): TlsOptions {
  return {
    key: t.keyPem,
    cert: t.certPem,
    ca: t.caPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    ALPNProtocols: [BACKHAUL_ALPN],
    handshakeTimeout: handshakeMs,
  }
}

/** The edge dialling `node`: the worker's certificate must chain to the fleet CA and name that node. */
export function clientTlsOptions(t: BackhaulTls, node: string): TlsConnectionOptions {
  return {
    key: t.keyPem,
    cert: t.certPem,
    ca: t.caPem,
    minVersion: 'TLSv1.3',
    ALPNProtocols: [BACKHAUL_ALPN],
    servername: node,
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => peerProblem(cert, node, 'server'),
  }
}

/** Why a peer's (already chain-verified) certificate is not the node we expect, as an Error; undefined when it is. */
export function peerProblem(cert: PeerCertificate, expectedNode: string | undefined, usage: 'server' | 'client'): Error | undefined {
  const oid = usage === 'server' ? SERVER_AUTH : CLIENT_AUTH
  const cn = cert.subject?.CN
  const name = Array.isArray(cn) ? cn[0] : cn
  if (name === undefined || name === '') return new Error('the peer certificate names no node (empty CN)')
  if (expectedNode !== undefined && name !== expectedNode) return new Error(`the peer certificate is node "${name}", expected "${expectedNode}"`)
  const eku = cert.ext_key_usage
  if (eku !== undefined && !eku.includes(oid)) return new Error(`the certificate of node "${name}" does not allow ${oid === CLIENT_AUTH ? 'client' : 'server'} authentication`)
  return undefined
}

/** The node a verified peer certificate names. */
export function peerNodeName(cert: PeerCertificate): string {
  const cn = cert.subject?.CN
  return (Array.isArray(cn) ? cn[0] : cn) ?? ''
}
