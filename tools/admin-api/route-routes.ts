import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { parseInput } from '../../schemas/api-bodies.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { explainAt, readRoutingHint, type RoutingHints } from '../../proxy/index.js'
import type { AdminApiComponents } from './components.js'

const ExplainQuerySchema = z.strictObject({
  host: z.string().min(1),
  port: z.coerce.number().int().min(1).max(65535).default(80),
  region: z.string().regex(/^[a-z]{3}$/, 'must be a three-letter region code').optional(),
  at: z.coerce.number().int().min(1).optional(),
  header: z.union([z.string(), z.array(z.string())]).optional().transform((h) => (h === undefined ? [] : Array.isArray(h) ? h : [h])),
})

function hintsFrom(headers: string[]): RoutingHints | undefined {
  let hints: RoutingHints | undefined
  for (const h of headers) {
    const i = h.indexOf(':')
    if (i <= 0) throw new EdgeProxyError('EP_INVALID_REQUEST', `header "${h}" must be NAME:VALUE`, { path: 'query.header' })
    hints = readRoutingHint(h.slice(0, i).trim().toLowerCase(), h.slice(i + 1), hints)
  }
  return hints
}

/**
 * `/v1/route/explain`: why a request for a host would go where it goes, computed by the proxy's own
 * routing code — live (this edge's index, loads and RTTs), from another region, or as of a past seq.
 */
export function routeRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  server.get<{ Querystring: Record<string, string | string[]> }>('/v1/route/explain', async (req) => {
    const q = parseInput(ExplainQuerySchema, req.query, 'query')
    const hints = hintsFrom(q.header)
    const host = q.host.toLowerCase().replace(/:\d+$/, '')
    if (q.at === undefined && (q.region === undefined || q.region === c.self.region)) {
      if (c.route === undefined) throw new EdgeProxyError('EP_CONFLICT', `node "${c.self.name}" has no edge role, so it routes nothing; ask an edge node, or pass --at SEQ or --region`)
      return { ...c.route.explain(host, q.port, hints), seq: c.catalog.lastSeq, region: c.self.region, live: true }
    }
    const toSeq = Math.min(q.at ?? c.catalog.lastSeq, c.catalog.lastSeq)
    const explained = await explainAt(c.catalog.readEvents(1, toSeq), {
      domain: c.route?.domain ?? 'localhost', region: q.region ?? c.self.region, host, publicPort: q.port, hints,
    })
    return { ...explained, region: q.region ?? c.self.region, live: false }
  })
}
