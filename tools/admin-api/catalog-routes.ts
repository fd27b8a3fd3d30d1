import type { FastifyInstance } from 'fastify'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { AdminApiComponents } from './components.js'

/** `/v1/catalog/...`: inspection of documents as this node holds them. */
export function catalogRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  server.get('/v1/catalog', async () => ({ node: c.self.name, seq: c.catalog.lastSeq, docs: Object.fromEntries(c.catalog.digest()) }))

  // Two nodes hold the same heads for every document exactly when their digests are equal: a few bytes to
  // poll while waiting for a fleet to converge, instead of every document's heads.
  server.get('/v1/catalog/digest', async () => ({ node: c.self.name, seq: c.catalog.lastSeq, digest: Buffer.from(c.catalog.digestHash()).toString('hex'), changedAt: c.catalog.digestChangedAt() }))

  server.get<{ Params: { docId: string } }>('/v1/catalog/docs/:docId', async (req) => {
    const { docId } = req.params
    const heads = c.catalog.digest().get(docId as never)
    if (docId === 'nodes') return { docId, heads, nodes: c.catalog.listNodes() }
    if (docId.startsWith('app:')) {
      const name = docId.slice(4)
      const app = c.catalog.getApp(name)
      const machines = c.catalog.listMachines({ app: name })
      if (app === undefined && machines.length === 0) throw new EdgeProxyError('EP_NOT_FOUND', `no document "${docId}"; see \`edgeproxy catalog apps\``)
      return { docId, heads, app: app ?? null, machines }
    }
    if (docId.startsWith('cert:')) {
      const cert = c.catalog.listCerts().find((x) => x.hostname === docId.slice(5))
      if (cert === undefined) throw new EdgeProxyError('EP_NOT_FOUND', `no document "${docId}"`)
      return { docId, heads, cert: { ...cert, keyPem: '(redacted)' } }
    }
    throw new EdgeProxyError('EP_NOT_FOUND', `no document "${docId}"; ids look like app:<name>, nodes or cert:<host>`)
  })

  server.get('/v1/catalog/quarantine', async () => c.catalog.listQuarantined())
}
