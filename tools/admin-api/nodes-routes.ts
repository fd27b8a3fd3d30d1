import type { FastifyInstance } from 'fastify'
import type { AdminApiComponents } from './components.js'

/** `/v1/nodes`: membership records plus the live view this node has of each (up/down, RTT). */
export function nodesRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  server.get('/v1/load', async () => c.loads?.() ?? {})

  server.get('/v1/nodes', async () => {
    const down = new Set(c.catalog.snapshot().downNodes)
    return c.catalog.listNodes().map((n) => {
      const self = n.name === c.self.name
      const up = n.status === 'active' && (self || (c.liveness?.isUp(n.name) ?? !down.has(n.name)))
      return { ...n, up, self, rttMs: self ? 0 : c.liveness?.rttMs(n.name) }
    })
  })
}
