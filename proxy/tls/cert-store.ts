import { createSecureContext, type SecureContext } from 'node:tls'
import type { Logger } from 'pino'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { CertRecord } from '../../schemas/catalog-records.js'
import { selfSignedCertificate } from './self-signed.js'

export interface CertStoreInit {
  /** Host names some app answers to: only these get their own self-signed certificate. */
  isKnownHost(host: string): boolean
  log: Logger
  /** Self-signed certificates kept in memory (one per host name). */
  maxSelfSigned?: number
}

/**
 * The public ports' TLS floor (issue 11 item 10): TLS 1.2 and 1.3, and in TLS 1.2 only forward-secret
 * AEAD suites (Mozilla "intermediate"). Node's default list would also accept static-RSA key exchange
 * (AES128-SHA…: no forward secrecy, ROBOT-class oracles) and CBC suites as soon as a user adds an RSA
 * certificate. Every secure context uses it; the server's order of suites wins (as tls.Server's default).
 */
export const PUBLIC_TLS = {
  minVersion: 'TLSv1.2',
  honorCipherOrder: true,
  ciphers: [
    'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
  ].join(':'),
} as const

/** Served when SNI names no app (or is absent): the handshake completes and HTTP answers EP_NO_APP. */
export const FALLBACK_HOSTNAME = 'edgeproxy.invalid'

/**
 * Certificates by SNI (issue 6): an added certificate for the exact name, else one for `*.parent`, else
 * a self-signed certificate generated once per name and cached. Secure contexts are built once.
 */
export class CertStore {
  private readonly records = new Map<string, CertRecord>()
  private readonly contexts = new Map<string, SecureContext>()
  private readonly selfSigned = new Map<string, Promise<SecureContext>>()
  private fallback: SecureContext | undefined
  private readonly maxSelfSigned: number

  constructor(private readonly init: CertStoreInit) {
    this.maxSelfSigned = init.maxSelfSigned ?? 10_000
  }

  /** Generates the fallback certificate; call before the first handshake. */
  async start(): Promise<void> {
    if (this.fallback !== undefined) return
    const pem = await selfSignedCertificate(FALLBACK_HOSTNAME)
    this.fallback = createSecureContext({ cert: pem.certPem, key: pem.keyPem, ...PUBLIC_TLS })
  }

  get defaultContext(): SecureContext {
    if (this.fallback === undefined) throw new Error('CertStore.start() was not awaited')
    return this.fallback
  }

  load(certs: readonly CertRecord[]): void {
    this.records.clear()
    this.contexts.clear()
    for (const c of certs) this.records.set(c.hostname, c)
  }

  apply(evt: CatalogEvent): void {
    if (evt.type === 'cert.upserted') {
      this.records.set(evt.cert.hostname, evt.cert)
      this.contexts.delete(evt.cert.hostname)
    } else if (evt.type === 'cert.removed') {
      this.records.delete(evt.hostname)
      this.contexts.delete(evt.hostname)
    }
  }

  /** The context for a ClientHello's server name (handlers/tls-front.ts). Never fails the handshake for a missing certificate. */
  select(servername: string | undefined, cb: (err: Error | null, ctx?: SecureContext) => void): void {
    const name = servername?.toLowerCase() ?? ''
    const added = name === '' ? undefined : this.added(name)
    if (added !== undefined) { cb(null, added); return }
    if (name === '' || !this.init.isKnownHost(name)) { cb(null, this.defaultContext); return }
    let pending = this.selfSigned.get(name)
    if (pending === undefined) {
      if (this.selfSigned.size >= this.maxSelfSigned) { cb(null, this.defaultContext); return }
      pending = this.generate(name)
      this.selfSigned.set(name, pending)
      pending.catch((err) => {
        this.selfSigned.delete(name)
        this.init.log.error({ err, host: name }, 'self-signed certificate generation failed')
      })
    }
    pending.then((ctx) => cb(null, ctx), () => cb(null, this.defaultContext))
  }

  /** An added certificate for the name: exact first, then a wildcard one label up. */
  private added(name: string): SecureContext | undefined {
    const exact = this.contextOf(name)
    if (exact !== undefined) return exact
    const dot = name.indexOf('.')
    return dot > 0 ? this.contextOf(`*.${name.slice(dot + 1)}`) : undefined
  }

  private contextOf(key: string): SecureContext | undefined {
    const cached = this.contexts.get(key)
    if (cached !== undefined) return cached
    const record = this.records.get(key)
    if (record === undefined) return undefined
    try {
      const ctx = createSecureContext({ cert: record.certPem, key: record.keyPem, ...PUBLIC_TLS })
      this.contexts.set(key, ctx)
      return ctx
    } catch (err) {
      this.init.log.error({ err, host: key }, 'certificate for this host cannot be used; serving the default; re-add it with `edgeproxy certs add`')
      this.records.delete(key)
      return undefined
    }
  }

  private async generate(hostname: string): Promise<SecureContext> {
    const pem = await selfSignedCertificate(hostname)
    return createSecureContext({ cert: pem.certPem, key: pem.keyPem, ...PUBLIC_TLS })
  }
}
