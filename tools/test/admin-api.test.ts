import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { request } from 'undici'
import pino from 'pino'
import { openCatalog, type Catalog } from '../../catalog/index.js'
import { adminApi, type AdminApi } from '../admin-api/server.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import { opensslCert } from '../../test/helpers/certs.js'
import { digestHashOf } from '../../catalog/digest-hash.js'

const FLY_TOML = `
app = "web"
primary_region = "ams"

[http_service]
  internal_port = 8080
  force_https = true
`

let dir: Awaited<ReturnType<typeof tempDir>>
let catalog: Catalog
let api: AdminApi | undefined
let base: string

async function startApi(init: { host?: string; token?: string } = {}): Promise<void> {
  api = adminApi({ host: init.host ?? '127.0.0.1', port: 0, token: init.token })({
    catalog, self: { name: 'ams-1', region: 'ams', roles: ['edge', 'worker'] }, log: pino({ level: 'silent' }),
  })
  await api.start()
  base = `http://${api.address()}`
}

beforeEach(async () => {
  dir = await tempDir()
  catalog = await openCatalog({ dataDir: dir.path, nodeName: 'ams-1', sync: false })
})
afterEach(async () => {
  await api?.stop()
  api = undefined
  await catalog.close()
  await dir.remove()
})

async function call(method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, body?: string, headers: Record<string, string> = {}) {
  const res = await request(`${base}${path}`, { method, body, headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers } })
  const text = await res.body.text()
  return { status: res.statusCode, json: text === '' ? undefined : JSON.parse(text), headers: res.headers }
}

describe('catalog inspection', () => {
  test('the catalog digest is the hash of every document\'s heads: it changes with a write and matches a node holding the same', async () => {
    await startApi()
    const empty = await call('GET', '/v1/catalog/digest')
    expect(empty.status).toBe(200)
    expect(empty.json).toMatchObject({ node: 'ams-1', digest: expect.stringMatching(/^[0-9a-f]{64}$/) })
    const beforeWrite = Date.now()
    expect((await call('PUT', '/v1/apps/web', FLY_TOML, { 'content-type': 'text/plain' })).status).toBe(201)
    const afterWrite = Date.now()
    const written = await call('GET', '/v1/catalog/digest')
    expect(written.json.digest).not.toBe(empty.json.digest)
    // changedAt: since when the node has held what it holds now (a fleet converged when the last one got there)
    expect(written.json.changedAt).toBeGreaterThanOrEqual(beforeWrite)
    expect(written.json.changedAt).toBeLessThanOrEqual(afterWrite)
    await new Promise((r) => setTimeout(r, 20))
    expect((await call('GET', '/v1/catalog/digest')).json.changedAt).toBe(written.json.changedAt)
    expect(written.json.seq).toBeGreaterThan(empty.json.seq)
    const heads = (await call('GET', '/v1/catalog')).json.docs as Record<string, string[]>
    expect(written.json.digest).toBe(Buffer.from(digestHashOf(new Map(Object.entries(heads)) as Map<never, string[]>)).toString('hex'))
  })
})

describe('apps and Machines', () => {
  test('deploying a fly.toml, creating and stopping a Machine, and reading it back', async () => {
    await startApi()
    const deployed = await call('PUT', '/v1/apps/web', FLY_TOML, { 'content-type': 'text/plain' })
    expect(deployed.status).toBe(201)
    expect(deployed.json.app).toMatchObject({ name: 'web', version: 1 })
    expect((await call('PUT', '/v1/apps/web', FLY_TOML, { 'content-type': 'application/toml' })).status).toBe(200)

    const created = await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: ['node', 'server.js'], env: { MODE: 'x' } }))
    expect(created.status).toBe(201)
    expect(created.json).toMatchObject({ app: 'web', region: 'ams', node: 'ams-1', desired: 'started', state: 'created', spec: { cmd: ['node', 'server.js'] } })

    const stopped = await call('POST', `/v1/machines/${created.json.id}/stop`)
    expect(stopped.json).toMatchObject({ desired: 'stopped', desiredReason: 'api: stop' })
    expect((await call('GET', '/v1/apps/web/machines')).json).toHaveLength(1)
    expect((await call('GET', '/v1/apps')).json[0]).toMatchObject({ name: 'web', machines: 1 })
    expect((await call('GET', '/v1/apps/web')).json.machines[0].id).toBe(created.json.id)

    const destroyed = await call('DELETE', `/v1/machines/${created.json.id}`)
    expect(destroyed.json.desired).toBe('destroyed')
    const restart = await call('POST', `/v1/machines/${created.json.id}/start`)
    expect(restart.status).toBe(409)
    expect(restart.json.code).toBe('EP_MACHINE_DESTROYED')

    expect((await call('DELETE', '/v1/apps/web')).status).toBe(200)
    expect((await call('GET', '/v1/apps')).json).toEqual([])
  })

  test('a JSON fly.toml deploys too', async () => {
    await startApi()
    const res = await call('PUT', '/v1/apps/api', JSON.stringify({ app: 'api', services: [{ internal_port: 9000, ports: [{ port: 9000 }] }] }))
    expect(res.status).toBe(201)
    expect(res.json.app.config.services[0].ports[0]).toMatchObject({ start_port: 9000, end_port: 9000, handlers: [] })
  })
})

describe('errors are {code, message, path} with the right status', () => {
  test('400 names the field and line of a bad fly.toml', async () => {
    await startApi()
    const bad = FLY_TOML.replace('internal_port = 8080', 'internal_port = "eighty"')
    const res = await call('PUT', '/v1/apps/web', bad, { 'content-type': 'text/plain' })
    expect(res.status).toBe(400)
    expect(res.json).toMatchObject({ code: 'EP_INVALID_CONFIG', path: 'http_service.internal_port' })
    expect(res.json.message).toContain('(line 6)')
  })

  test('400 when the URL and the config disagree, for bad bodies, bad query strings and unknown fields', async () => {
    await startApi()
    expect((await call('PUT', '/v1/apps/other', FLY_TOML, { 'content-type': 'text/plain' })).json).toMatchObject({ code: 'EP_INVALID_CONFIG', path: 'app' })
    await call('PUT', '/v1/apps/web', FLY_TOML, { 'content-type': 'text/plain' })
    const unknown = await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: ['x'], colour: 'red' }))
    expect(unknown.status).toBe(400)
    expect(unknown.json.message).toContain('body.colour')
    const badType = await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: 'node server.js' }))
    expect(badType).toMatchObject({ status: 400, json: { code: 'EP_INVALID_REQUEST', path: 'body.cmd' } })
    const badRegion = await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: ['x'], region: 'nowhere' }))
    expect(badRegion.status).toBe(400)
    const notJson = await call('POST', '/v1/apps/web/machines', '{"cmd": [', { 'content-type': 'application/json' })
    expect(notJson).toMatchObject({ status: 400, json: { code: 'EP_INVALID_REQUEST' } })
    const badQuery = await call('GET', '/v1/events?from=zero')
    expect(badQuery).toMatchObject({ status: 400, json: { code: 'EP_INVALID_REQUEST', path: 'query.from' } })
  })

  test('404 for unknown apps, Machines and routes', async () => {
    await startApi()
    expect((await call('GET', '/v1/apps/nope')).json).toMatchObject({ code: 'EP_APP_NOT_FOUND' })
    expect((await call('GET', '/v1/apps/nope')).status).toBe(404)
    expect((await call('POST', '/v1/machines/0123456789abcd/start')).status).toBe(404)
    expect((await call('GET', '/v2/whatever')).json.code).toBe('EP_NOT_FOUND')
  })

  test('off loopback the API refuses to start without a token, and with one demands it (401)', async () => {
    expect(() => adminApi({ host: '0.0.0.0', port: 0 })({ catalog, self: { name: 'ams-1', region: 'ams', roles: ['edge'] }, log: pino({ level: 'silent' }) }))
      .toThrow(/--admin-token-file/)
    await startApi({ token: 'a-very-long-secret-token' })
    expect((await call('GET', '/v1/apps')).status).toBe(401)
    expect((await call('GET', '/v1/apps', undefined, { authorization: 'Bearer wrong-token-of-some-sort' })).json.code).toBe('EP_UNAUTHORIZED')
    expect((await call('GET', '/v1/apps', undefined, { authorization: 'Bearer a-very-long-secret-token' })).status).toBe(200)
    expect((await call('GET', '/healthz')).status).toBe(200)
  })
})

describe('the event stream', () => {
  test('NDJSON from a seq to the end, and SSE following live changes', async () => {
    await startApi()
    await call('PUT', '/v1/apps/web', FLY_TOML, { 'content-type': 'text/plain' })
    await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: ['x'] }))

    const all = await request(`${base}/v1/events?from=1`)
    const lines = (await all.body.text()).trim().split('\n').map((l) => JSON.parse(l) as CatalogEvent)
    expect(lines.map((e) => e.type)).toEqual(['app.upserted', 'machine.upserted'])

    const abort = new AbortController()
    const live = await request(`${base}/v1/events?from=2`, { headers: { accept: 'text/event-stream' }, signal: abort.signal })
    expect(live.headers['content-type']).toBe('text/event-stream')
    const received: string[] = []
    const done = (async () => {
      for await (const chunk of live.body) {
        received.push(chunk.toString())
        if (received.join('').includes('event: machine.upserted') && received.join('').includes('id: 3')) return
      }
    })()
    await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: ['y'] }))
    await done
    abort.abort()
    const text = received.join('')
    expect(text).toContain('id: 2\nevent: machine.upserted')
    expect(text).toContain('id: 3\nevent: machine.upserted')
  })
})

describe('certificates', () => {
  test('a real certificate is stored for its hostname; a wrong host, a foreign key and garbage are refused', async () => {
    await startApi()
    const www = await opensslCert(dir.path, 'www.example.com')
    const other = await opensslCert(dir.path, 'other.example.com')
    const added = await call('POST', '/v1/certs', JSON.stringify({ hostname: 'WWW.example.com', certPem: www.certPem, keyPem: www.keyPem }))
    expect(added.status).toBe(201)
    expect(added.json).toMatchObject({ hostname: 'www.example.com', names: 'DNS:www.example.com' })
    expect(catalog.listCerts()).toEqual([expect.objectContaining({ hostname: 'www.example.com', certPem: www.certPem })])
    const listed = await call('GET', '/v1/certs')
    expect(listed.json).toEqual([expect.objectContaining({ hostname: 'www.example.com' })])
    expect(JSON.stringify(listed.json)).not.toContain('PRIVATE KEY')

    const wrongHost = await call('POST', '/v1/certs', JSON.stringify({ hostname: 'api.example.com', certPem: www.certPem, keyPem: www.keyPem }))
    expect(wrongHost.json).toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'hostname' })
    const foreignKey = await call('POST', '/v1/certs', JSON.stringify({ hostname: 'www.example.com', certPem: www.certPem, keyPem: other.keyPem }))
    expect(foreignKey.json).toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'keyPem' })
    const garbage = await call('POST', '/v1/certs', JSON.stringify({ hostname: 'www.example.com', certPem: 'nope', keyPem: www.keyPem }))
    expect(garbage.json).toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'certPem' })

    expect((await call('DELETE', '/v1/certs/www.example.com')).status).toBe(200)
    expect(catalog.listCerts()).toEqual([])
  })
})

describe('stop requests', () => {
  test('a stop may name its signal and timeout (Fly\'s stop body); a bad signal or timeout is a 400 naming the field', async () => {
    await startApi()
    await call('PUT', '/v1/apps/web', FLY_TOML, { 'content-type': 'text/plain' })
    const m = (await call('POST', '/v1/apps/web/machines', JSON.stringify({ cmd: ['x'] }))).json as { id: string }
    const ok = await call('POST', `/v1/machines/${m.id}/stop`, JSON.stringify({ signal: 'term', timeout: '2s' }))
    expect(ok.json).toMatchObject({ desired: 'stopped', stopSignal: 'SIGTERM', stopTimeout: 2000 })
    const badSignal = await call('POST', `/v1/machines/${m.id}/stop`, JSON.stringify({ signal: 'SIGWHATEVER' }))
    expect(badSignal).toMatchObject({ status: 400, json: { code: 'EP_INVALID_REQUEST', path: 'body.signal' } })
    const badTimeout = await call('POST', `/v1/machines/${m.id}/stop`, JSON.stringify({ timeout: '10 minutes' }))
    expect(badTimeout).toMatchObject({ status: 400, json: { path: 'body.timeout' } })
  })
})

describe('hostnames', () => {
  test('a public custom hostname under .flycast is refused at deploy', async () => {
    await startApi()
    const res = await call('PUT', '/v1/apps/web?hostnames=web.flycast', FLY_TOML, { 'content-type': 'text/plain' })
    expect(res.status).toBe(400)
    expect(res.json).toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'hostnames[0]' })
    expect(res.json.message).toContain('.flycast are private')
  })
})
