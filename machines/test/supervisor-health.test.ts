import { rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import type { CatalogEventOf } from '../../schemas/catalog-events.js'
import { readMachineLogs } from '../logs/read-logs.js'
import { harness, type Harness, isReady, isStarted, waitMachine } from './harness.js'

let h: Harness | undefined
afterEach(async () => { await h?.teardown(); h = undefined })

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

test('a Machine is ready only after its first passing check, though its port opened a second earlier', async () => {
  h = await harness()
  await h.deploy('slow', `[http_service]\ninternal_port = ${h.port}\n[[http_service.checks]]\ngrace_period = "0s"\ninterval = "5s"\ntimeout = "500ms"\npath = "/healthz"\n`)
  const m = await h.run('slow', { HEALTHY_AFTER_MS: '1000' })
  const started = await waitMachine(h.catalog, m.id, isStarted, 'started')
  const addr = started.privateAddr as string

  // the port accepts, /healthz still says 503: not ready, so routing and autostart keep waiting
  await waitForPort(addr, h.port)
  const openSeenAt = Date.now()
  expect((await request(`http://${addr}:${h.port}/healthz`)).statusCode).toBe(503)
  expect(h.catalog.getMachine(m.id)).toMatchObject({ state: 'started', ready: false })

  const ready = await waitMachine(h.catalog, m.id, (x) => x.ready, 'ready')
  const readyAt = Date.now()
  expect(ready.checks).toEqual({ [`servicecheck-00-http-${h.port}`]: 'passing' })
  expect(ready.healthAt).toBeGreaterThan(openSeenAt)
  expect((await request(`http://${addr}:${h.port}/healthz`)).statusCode).toBe(200)
  // retried every readinessPollMs until the first pass, not only every 5 s interval
  expect(readyAt - openSeenAt).toBeLessThan(4000)
})

async function waitForPort(host: string, port: number): Promise<void> {
  const deadline = Date.now() + 5000
  while (!(await accepts(host, port))) {
    if (Date.now() > deadline) throw new Error(`port ${host}:${port} never accepted`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

test('a failing check turns critical within interval + timeout, visible in the catalog, and recovers', async () => {
  h = await harness()
  const sick = join(h.dir, 'sick')
  const interval = 400
  const timeout = 200
  await h.deploy('web', `[http_service]\ninternal_port = ${h.port}\n[[http_service.checks]]\ngrace_period = "0s"\ninterval = "${interval}ms"\ntimeout = "${timeout}ms"\npath = "/healthz"\n`)
  const m = await h.run('web', { UNHEALTHY_FILE: sick })
  await waitMachine(h.catalog, m.id, isReady, 'ready')
  const name = `servicecheck-00-http-${h.port}`
  const changes: Array<CatalogEventOf<'health.changed'>> = []
  const sub = h.catalog.subscribe({}, (e) => { if (e.type === 'health.changed' && e.machineId === m.id) changes.push(e) })

  await writeFile(sick, '')
  const sickAt = Date.now()
  const critical = await waitMachine(h.catalog, m.id, (x) => x.checks[name] === 'critical', 'critical')
  const flipMs = Date.now() - sickAt
  // ready stays true: readiness is about the first pass; routing also reads the check status
  expect(critical.ready).toBe(true)
  expect(critical.state).toBe('started') // a failing Machine is not restarted (FLY-SPEC §8)
  // the bound is interval + timeout; the margin covers scheduling and an fsync'd catalog write on 2 busy cores
  expect(flipMs).toBeLessThan(interval + timeout + 600)

  await rm(sick)
  await waitMachine(h.catalog, m.id, (x) => x.checks[name] === 'passing', 'passing again')
  sub.close()
  expect(changes.map((c) => c.checks[name])).toEqual(['critical', 'passing'])
})

const forceHttpsApp = (port: number): string => [
  `[http_service]`, `internal_port = ${port}`, `force_https = true`,
  `[[http_service.checks]]`, `grace_period = "0s"`, `interval = "300ms"`, `timeout = "300ms"`, `path = "/healthz"`,
].join('\n')

test('http checks send X-Forwarded-Proto: https, so a force_https app passes them instead of redirecting', async () => {
  h = await harness()
  await h.deploy('secure', forceHttpsApp(h.port))
  const m = await h.run('secure', { FORCE_HTTPS: '1' })
  const ready = await waitMachine(h.catalog, m.id, isReady, 'ready')
  expect(ready.checks).toEqual({ [`servicecheck-00-http-${h.port}`]: 'passing' })
  // the same request without the header is redirected
  expect((await request(`http://${ready.privateAddr}:${h.port}/healthz`)).statusCode).toBe(301)
})

test('without X-Forwarded-Proto the redirect is not followed and the check stays critical', async () => {
  h = await harness({ health: { readinessPollMs: 50, forwardedProto: false } })
  await h.deploy('secure', forceHttpsApp(h.port))
  const m = await h.run('secure', { FORCE_HTTPS: '1' })
  await waitMachine(h.catalog, m.id, isStarted, 'started')
  const lines: string[] = []
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), 5000)
  for await (const line of readMachineLogs(h.dir, m.id, { follow: true, signal: ac.signal })) {
    lines.push(line)
    if (line.includes('HTTP 301')) break
  }
  clearTimeout(timer)
  expect(lines.join('\n')).toContain(`health check servicecheck-00-http-${h.port} is critical (HTTP 301 (redirect to https://`)
  expect(h.catalog.getMachine(m.id)).toMatchObject({ state: 'started', ready: false, checks: { [`servicecheck-00-http-${h.port}`]: 'critical' } })
})

test('a top-level check is informational: it is reported but does not hold back readiness', async () => {
  h = await harness()
  await h.deploy('web', [
    `[http_service]`, `internal_port = ${h.port}`,
    `[checks.admin]`, `type = "tcp"`, `port = 1`, `grace_period = "0s"`, `interval = "2s"`, `timeout = "300ms"`,
  ].join('\n'))
  const m = await h.run('web')
  const ready = await waitMachine(h.catalog, m.id, (x) => isReady(x) && x.checks.admin === 'critical', 'ready, with the admin check critical')
  expect(ready.checks).toEqual({ admin: 'critical' })
})

test('with no checks, a Machine is ready once its port accepts', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web')
  const ready = await waitMachine(h.catalog, m.id, isReady, 'ready')
  expect(ready.checks).toEqual({})
  expect(await accepts(ready.privateAddr as string, h.port)).toBe(true)
})

test('a Machine whose app defines no service is ready once started', async () => {
  h = await harness()
  await h.deploy('worker', '')
  const m = await h.run('worker')
  const ready = await waitMachine(h.catalog, m.id, isReady, 'ready')
  expect(ready.checks).toEqual({})
  expect(h.pidOf(m.id)).toBeGreaterThan(0)
})
