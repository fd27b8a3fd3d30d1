import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { EventsQuerySchema, parseInput } from '../../schemas/api-bodies.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import type { AdminApiComponents } from './components.js'

/** A follower that falls this far behind is cut off rather than buffered without bound. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024
const KEEPALIVE_MS = 15_000

function eventApp(e: CatalogEvent): string | undefined {
  switch (e.type) {
    case 'app.upserted': return e.app.name
    case 'app.removed': return e.app
    case 'machine.upserted': return e.machine.app
    case 'machine.state':
    case 'machine.removed':
    case 'health.changed': return e.app
    default: return undefined
  }
}

/**
 * `/v1/events?from=SEQ[&follow=1][&app=A]`: the catalog event log as NDJSON, or as Server-Sent Events when
 * the client accepts text/event-stream (then `Last-Event-ID` resumes). Without follow the stream ends at
 * the newest event that existed when the request arrived.
 */
export function eventsRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  server.get<{ Querystring: Record<string, string> }>('/v1/events', async (req: FastifyRequest<{ Querystring: Record<string, string> }>, reply: FastifyReply) => {
    const q = parseInput(EventsQuerySchema, req.query, 'query')
    const sse = (req.headers.accept ?? '').includes('text/event-stream')
    const lastEventId = Number(req.headers['last-event-id'])
    const from = Number.isInteger(lastEventId) && lastEventId > 0 ? lastEventId + 1 : (q.from ?? 1)
    const follow = q.follow ?? sse
    const endAt = c.catalog.lastSeq

    reply.hijack()
    const res = reply.raw
    res.writeHead(200, {
      'content-type': sse ? 'text/event-stream' : 'application/x-ndjson',
      'cache-control': 'no-store',
      'x-catalog-seq': String(endAt),
    })
    if (!follow && from > endAt) {
      res.end()
      return
    }
    let done = false
    let keepalive: NodeJS.Timeout | undefined
    const finish = (): void => {
      if (done) return
      done = true
      sub.close()
      clearInterval(keepalive)
      res.end()
    }
    const sub = c.catalog.subscribe({ fromSeq: from }, (e) => {
      if (done) return
      if (q.app === undefined || eventApp(e) === q.app) {
        const json = JSON.stringify(e)
        res.write(sse ? `id: ${e.seq}\nevent: ${e.type}\ndata: ${json}\n\n` : `${json}\n`)
        if (res.writableLength > MAX_BUFFERED_BYTES) {
          req.log.warn({ seq: e.seq }, 'event stream client too slow; closing its stream')
          res.destroy()
          finish()
          return
        }
      }
      if (!follow && e.seq >= endAt) finish()
    })
    if (follow) keepalive = setInterval(() => res.write(sse ? ': keepalive\n\n' : '\n'), KEEPALIVE_MS)
    req.raw.on('close', finish)
    res.on('error', finish)
  })
}
