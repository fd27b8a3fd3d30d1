import Fastify, { type FastifyInstance, LogController } from 'fastify'
import type { Logger } from 'pino'
import { EdgeProxyError } from '../../schemas/errors.js'
import { appsRoutes } from './apps-routes.js'
import { installBearerAuth, isLoopback } from './auth.js'
import { catalogRoutes } from './catalog-routes.js'
import { certsRoutes } from './certs-routes.js'
import type { AdminApiComponents } from './components.js'
import { installErrorHandling } from './errors.js'
import { eventsRoutes } from './events-routes.js'
import { flycastRoutes } from './flycast-routes.js'
import { machinesRoutes } from './machines-routes.js'
import { nodesRoutes } from './nodes-routes.js'
import { uiRoutes } from './ui-routes.js'
import { routeRoutes } from './route-routes.js'

export interface AdminApiInit {
  host: string
  port: number
  /** Required when host is not loopback. */
  token?: string
  /** fly.toml bodies are small; this bounds what a client can make the node buffer. */
  bodyLimit?: number
}

export interface AdminApi {
  readonly server: FastifyInstance
  start(): Promise<void>
  stop(): Promise<void>
  /** host:port actually bound (port 0 picks one). */
  address(): string
}

export function adminApi(init: AdminApiInit) {
  return (components: AdminApiComponents & { log: Logger }): AdminApi => {
    if (!isLoopback(init.host) && (init.token === undefined || init.token === '')) {
      throw new EdgeProxyError('EP_INVALID_REQUEST', `the admin API on ${init.host} would be reachable from the network without a token; pass --admin-token-file FILE or bind it to 127.0.0.1`)
    }
    const server = Fastify({ loggerInstance: components.log, bodyLimit: init.bodyLimit ?? 1024 * 1024, logController: new LogController({ disableRequestLogging: true }) }) as unknown as FastifyInstance
    server.addContentTypeParser(['text/plain', 'application/toml'], { parseAs: 'string' }, (_req, body, done) => done(null, body))
    installErrorHandling(server)
    if (init.token !== undefined && init.token !== '') installBearerAuth(server, init.token)
    server.get('/healthz', async () => ({ ok: true, node: components.self.name, region: components.self.region, seq: components.catalog.lastSeq }))
    if (components.metrics !== undefined) {
      const metrics = components.metrics
      server.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4').send(await metrics()))
    }
    appsRoutes(server, components)
    machinesRoutes(server, components)
    nodesRoutes(server, components)
    eventsRoutes(server, components)
    catalogRoutes(server, components)
    certsRoutes(server, components)
    flycastRoutes(server, components)
    uiRoutes(server)
    routeRoutes(server, components)

    return {
      server,
      async start() {
        await server.listen({ host: init.host, port: init.port })
      },
      async stop() {
        await server.close()
      },
      address() {
        const a = server.server.address()
        return a !== null && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : `${init.host}:${init.port}`
      },
    }
  }
}
