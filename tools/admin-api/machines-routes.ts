import type { FastifyInstance } from 'fastify'
import { LogsQuerySchema, MachineCreateBodySchema, MachinesQuerySchema, parseInput } from '../../schemas/api-bodies.js'
import { MachineStopBodySchema } from '../../schemas/machine-requests.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { AdminApiComponents } from './components.js'
import { placeMachine } from './placement.js'

const ACTIONS = { start: 'started', stop: 'stopped', suspend: 'suspended' } as const

/** `/v1/apps/:app/machines` and `/v1/machines/:id`: Machines are changed only through their desired state. */
export function machinesRoutes(server: FastifyInstance, c: AdminApiComponents): void {
  const requireMachine = (id: string) => {
    const m = c.catalog.getMachine(id)
    if (m === undefined) throw new EdgeProxyError('EP_MACHINE_NOT_FOUND', `no Machine "${id}"; see \`edgeproxy machines ls\``)
    return m
  }

  server.get<{ Querystring: Record<string, string> }>('/v1/machines', async (req) => {
    const q = parseInput(MachinesQuerySchema, req.query, 'query')
    return c.catalog.listMachines(q)
  })

  server.get<{ Params: { app: string } }>('/v1/apps/:app/machines', async (req) => {
    if (c.catalog.getApp(req.params.app) === undefined) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${req.params.app}"; see \`edgeproxy apps ls\``)
    return c.catalog.listMachines({ app: req.params.app })
  })

  server.post<{ Params: { app: string } }>('/v1/apps/:app/machines', async (req, reply) => {
    const body = parseInput(MachineCreateBodySchema, req.body, 'body')
    const app = c.catalog.getApp(req.params.app)
    if (app === undefined) throw new EdgeProxyError('EP_APP_NOT_FOUND', `no app "${req.params.app}"; deploy it first with \`edgeproxy apps deploy\``)
    const isUp = (node: string) => node === c.self.name || (c.liveness?.isUp(node) ?? true)
    const where = placeMachine(c.catalog, c.self, app.config, body, isUp)
    const machine = await c.catalog.createMachine({
      app: app.name,
      region: where.region,
      node: where.node,
      id: body.id,
      desired: body.desired,
      spec: { cmd: body.cmd, env: body.env, processGroup: body.processGroup },
    })
    return reply.status(201).send(machine)
  })

  server.get<{ Params: { id: string } }>('/v1/machines/:id', async (req) => requireMachine(req.params.id))

  for (const [action, desired] of Object.entries(ACTIONS)) {
    server.post<{ Params: { id: string } }>(`/v1/machines/:id/${action}`, async (req) => {
      requireMachine(req.params.id)
      // stop takes Fly's optional body {signal, timeout}; a bad signal or timeout is a 400 naming the field
      const stop = action === 'stop' ? parseInput(MachineStopBodySchema, req.body ?? {}, 'body') : {}
      return c.catalog.setDesiredState(req.params.id, desired, `api: ${action}`, { signal: stop.signal, timeoutMs: stop.timeout })
    })
  }

  server.delete<{ Params: { id: string } }>('/v1/machines/:id', async (req) => {
    requireMachine(req.params.id)
    return c.catalog.setDesiredState(req.params.id, 'destroyed', 'api: destroy')
  })

  server.get<{ Params: { id: string }; Querystring: Record<string, string> }>('/v1/machines/:id/logs', async (req, reply) => {
    const q = parseInput(LogsQuerySchema, req.query, 'query')
    const m = requireMachine(req.params.id)
    if (m.node !== c.self.name || c.logs === undefined) {
      const where = c.catalog.getNode(m.node)?.admin
      throw new EdgeProxyError('EP_CONFLICT', `Machine ${m.id} runs on node "${m.node}"; its logs are there${where ? ` (admin API ${where})` : ''}`)
    }
    const abort = new AbortController()
    req.raw.on('close', () => abort.abort())
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
    try {
      for await (const line of c.logs.read(m.id, { follow: q.follow ?? false, tail: q.tail ?? 200, signal: abort.signal })) {
        if (!reply.raw.write(line.endsWith('\n') ? line : `${line}\n`)) await new Promise((r) => reply.raw.once('drain', r))
      }
    } catch (err) {
      if (!abort.signal.aborted) req.log.warn({ err, machine: m.id }, 'reading Machine logs failed')
    }
    reply.raw.end()
  })
}
