import type { FastifyError, FastifyInstance } from 'fastify'
import { EdgeProxyError } from '../../schemas/errors.js'

/** The one place an error becomes an admin API answer: `{code, message, path?}` with the code's status. */
export function installErrorHandling(server: FastifyInstance): void {
  server.setErrorHandler((err: FastifyError | EdgeProxyError, req, reply) => {
    let e: EdgeProxyError
    if (err instanceof EdgeProxyError) e = err
    else if (err.validation !== undefined || (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)) {
      e = new EdgeProxyError('EP_INVALID_REQUEST', err.message)
      if (err.statusCode === 413) return reply.status(413).send({ code: 'EP_BODY_TOO_LARGE', message: err.message })
      if (err.statusCode === 415) return reply.status(415).send({ code: 'EP_INVALID_REQUEST', message: err.message })
    } else e = EdgeProxyError.from(err)
    if (e.status >= 500) req.log.error({ err }, 'admin request failed')
    return reply.status(e.status).send(e.toJSON())
  })
  server.setNotFoundHandler((req, reply) => {
    const e = new EdgeProxyError('EP_NOT_FOUND', `no route ${req.method} ${req.url}; see docs/configuration.md#admin-api`)
    return reply.status(404).send(e.toJSON())
  })
}
