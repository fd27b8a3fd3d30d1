import { createPrivateKey, X509Certificate } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { CertBodySchema, parseInput } from '../../schemas/api-bodies.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { AdminApiComponents } from './components.js'

/** Refuses a certificate that could never be served for the hostname: unparseable, expired, or not its key. */
export function checkCertificate(hostname: string, certPem: string, keyPem: string): { notAfter: string; names: string } {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(certPem)
  } catch (err) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `certPem is not a PEM certificate: ${(err as Error).message}`, { path: 'certPem', cause: err })
  }
  let key
  try {
    key = createPrivateKey(keyPem)
  } catch (err) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `keyPem is not a PEM private key: ${(err as Error).message}`, { path: 'keyPem', cause: err })
  }
  if (!cert.checkPrivateKey(key)) throw new EdgeProxyError('EP_INVALID_REQUEST', 'the private key does not belong to the certificate', { path: 'keyPem' })
  const probe = hostname.startsWith('*.') ? `x${hostname.slice(1)}` : hostname
  if (cert.checkHost(probe) === undefined) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `the certificate is not valid for "${hostname}" (it names ${cert.subjectAltName ?? cert.subject})`, { path: 'hostname' })
  }
  if (new Date(cert.validTo).getTime() < Date.now()) throw new EdgeProxyError('EP_INVALID_REQUEST', `the certificate expired on ${cert.validTo}`, { path: 'certPem' })
  return { notAfter: cert.validTo, names: cert.subjectAltName ?? cert.subject }
}

/** `/v1/certs`: certificates the tls handler serves by SNI, shared with the fleet through the catalog. */
export function certsRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  server.get('/v1/certs', async () => c.catalog.listCerts().map(({ keyPem: _key, ...cert }) => {
    const x = new X509Certificate(cert.certPem)
    return { hostname: cert.hostname, addedAt: cert.addedAt, notAfter: x.validTo, names: x.subjectAltName ?? x.subject }
  }))

  server.post('/v1/certs', async (req, reply) => {
    const body = parseInput(CertBodySchema, req.body, 'body')
    const hostname = body.hostname.toLowerCase()
    const facts = checkCertificate(hostname, body.certPem, body.keyPem)
    const existed = c.catalog.listCerts().some((x) => x.hostname === hostname)
    const cert = await c.catalog.putCert({ hostname, certPem: body.certPem, keyPem: body.keyPem })
    return reply.status(existed ? 200 : 201).send({ hostname: cert.hostname, addedAt: cert.addedAt, ...facts })
  })

  server.delete<{ Params: { hostname: string } }>('/v1/certs/:hostname', async (req) => {
    await c.catalog.removeCert(req.params.hostname.toLowerCase())
    return { removed: req.params.hostname.toLowerCase() }
  })
}
