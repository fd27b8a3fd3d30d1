import type { FastifyInstance } from 'fastify'
import { DeployQuerySchema, parseInput } from '../../schemas/api-bodies.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { parseAppConfigText, parseAppConfigValue } from '../../schemas/parse-app-config.js'
import type { AdminApiComponents } from './components.js'

/** `/v1/apps`: deploy fly.toml (TOML text or its JSON form), list, show, remove. */
export function appsRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  server.get('/v1/apps', async () => c.catalog.listApps().map((app) => ({
    ...app,
    machines: c.catalog.listMachines({ app: app.name }).length,
  })))

  server.get<{ Params: { app: string } }>('/v1/apps/:app', async (req) => {
    const app = c.catalog.getApp(req.params.app)
    if (app === undefined) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${req.params.app}"; see \`edgeproxy apps ls\``)
    return { ...app, machines: c.catalog.listMachines({ app: app.name }) }
  })

  server.put<{ Params: { app: string }; Querystring: Record<string, string> }>('/v1/apps/:app', async (req, reply) => {
    const query = parseInput(DeployQuerySchema, req.query, 'query')
    const options = { file: 'request body', strict: query.strict ?? false }
    const parsed = typeof req.body === 'string' ? parseAppConfigText(req.body, options) : parseAppConfigValue(req.body, options)
    if (parsed.config.app !== req.params.app) {
      throw new EdgeProxyError('EP_INVALID_CONFIG', `the config is for app "${parsed.config.app}" but the URL names "${req.params.app}"`, { path: 'app' })
    }
    const existed = c.catalog.getApp(req.params.app) !== undefined
    const app = await c.catalog.deployApp(parsed.config, { hostnames: query.hostnames })
    for (const w of parsed.warnings) req.log.warn({ app: app.name, warning: w }, 'fly.toml warning')
    return reply.status(existed ? 200 : 201).send({ app, warnings: parsed.warnings })
  })

  server.delete<{ Params: { app: string } }>('/v1/apps/:app', async (req) => {
    await c.catalog.removeApp(req.params.app)
    return { removed: req.params.app }
  })
}
