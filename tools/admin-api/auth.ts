import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { EdgeProxyError } from '../../schemas/errors.js'

/** Requires `Authorization: Bearer <token>` on every route but /healthz. */
export function installBearerAuth(server: FastifyInstance, token: string): void {
  const expected = Buffer.from(token)
  server.addHook('onRequest', async (req) => {
    if (req.url === '/healthz') return
    const header = req.headers.authorization ?? ''
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7).trim() : '')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new EdgeProxyError('EP_UNAUTHORIZED', 'missing or wrong bearer token; pass --token-file (CLI) or an Authorization: Bearer header')
    }
  })
}

/** Loopback needs no token; any other address must have one (the admin API can start and stop Machines). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.')
}
