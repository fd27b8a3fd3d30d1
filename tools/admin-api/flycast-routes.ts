import type { FastifyInstance } from 'fastify'
import { DEFAULT_FLYCAST_RANGE, flycastName, parseFlycastRange } from '../../schemas/flycast.js'
import type { AdminApiComponents } from './components.js'
import { FlycastAllocator } from './flycast-allocator.js'

/**
 * `POST /v1/apps/:app/flycast`: gives the app its private Flycast address (FLY-SPEC §9), 201 when it was
 * allocated now, 200 when it had one. The allocator also repairs clashes between nodes while the API runs.
 */
export function flycastRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  const range = parseFlycastRange(c.flycastRange ?? DEFAULT_FLYCAST_RANGE)
  const allocator = new FlycastAllocator(c.catalog, range, server.log.child({ part: 'flycast' }))
  server.addHook('onReady', async () => { allocator.start() })
  server.addHook('onClose', async () => { await allocator.stop() })

  server.post<{ Params: { app: string } }>('/v1/apps/:app/flycast', async (req, reply) => {
    const { record, allocated } = await allocator.allocate(req.params.app)
    const ports = [...new Set(record.config.services.filter((s) => s.protocol === 'tcp').flatMap((s) => s.ports.map((p) => p.start_port)))]
    return reply.status(allocated ? 201 : 200).send({ app: record.name, name: flycastName(record.name), address: record.flycast, ports, range: range.cidr, allocated })
  })
}
