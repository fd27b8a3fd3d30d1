import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { httpApp, REGION, startHarness, type Harness } from './harness.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

test('a request reaches the Machine with the forwarding headers and the response carries Server, Via and Fly-Request-Id', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])

  const res = await request(h.url(80, '/hello?x=1'), { headers: { host: 'web.localhost', 'x-forwarded-for': '10.0.0.1', 'fly-client-ip': '6.6.6.6', 'fly-region': 'zzz' } })
  const body = await res.body.json() as { machine: string; url: string; headers: Record<string, string> }

  expect(res.statusCode).toBe(200)
  expect(body.machine).toBe(machines[0].addr)
  expect(body.url).toBe('/hello?x=1')
  const sent = body.headers
  expect(sent['x-forwarded-for']).toBe('10.0.0.1, 127.0.0.1')
  expect(sent['fly-client-ip']).toBe('127.0.0.1')
  expect(sent['x-forwarded-proto']).toBe('http')
  expect(sent['x-forwarded-ssl']).toBe('off')
  expect(sent['x-forwarded-port']).toBe('80')
  expect(sent['fly-forwarded-port']).toBe(String(h.port(80)))
  expect(sent['fly-region']).toBe(REGION)
  expect(sent.via).toBe('1.1 fly.io')
  expect(sent.host).toBe('web.localhost')
  expect(sent['fly-request-id']).toMatch(new RegExp(`^[0-9A-HJKMNP-TV-Z]{26}-${REGION}$`))

  expect(res.headers.server).toBe('Fly/edgeproxy')
  expect(res.headers.via).toBe('1.1 fly.io')
  expect(res.headers['fly-request-id']).toBe(sent['fly-request-id'])
})

test('response.headers edits apply last and pristine leaves Server, Via and Fly-Request-Id alone', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1, (req, res) => {
    res.writeHead(200, { 'x-powered-by': 'express', server: 'my-app', 'content-length': 2 })
    res.end('ok')
  })
  await h.deploy(`app = "web"
[[services]]
internal_port = ${port}
[[services.ports]]
port = 80
handlers = ["http"]
[services.ports.http_options.response]
headers = { x-powered-by = false, x-frame-options = "DENY", x-multi = ["a", "b"] }

[[services.ports]]
port = 81
handlers = ["http"]
[services.ports.http_options.response]
pristine = true
`)
  await h.addMachine('web', machines[0])

  const edited = await request(h.url(80), { headers: { host: 'web.localhost' } })
  await edited.body.text()
  expect(edited.headers['x-powered-by']).toBeUndefined()
  expect(edited.headers['x-frame-options']).toBe('DENY')
  expect(edited.headers['x-multi']).toEqual(['a', 'b'])
  expect(edited.headers.server).toBe('Fly/edgeproxy')

  const pristine = await request(h.url(81), { headers: { host: 'web.localhost' } })
  await pristine.body.text()
  expect(pristine.headers.server).toBe('my-app')
  expect(pristine.headers.via).toBeUndefined()
  expect(pristine.headers['fly-request-id']).toBeUndefined()
  expect(pristine.headers['x-powered-by']).toBe('express')
})

test('an unknown host gets 404 EP_NO_APP with the code in a header and a one-line body naming the request id', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])

  const res = await request(h.url(80), { headers: { host: 'nope.localhost' } })
  const text = await res.body.text()

  expect(res.statusCode).toBe(404)
  expect(res.headers['edgeproxy-error']).toBe('EP_NO_APP')
  const id = res.headers['fly-request-id'] as string
  expect(id).toMatch(/-ams$/)
  expect(text).toBe(`EP_NO_APP: no app answers to "nope.localhost" on port 80; see \`edgeproxy catalog apps\` (request id ${id})\n`)
})

test('a client X-Forwarded-Port passes through; client Via lines are kept and ours appended', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])
  const res = await request(h.url(80), { headers: { host: 'web.localhost', 'x-forwarded-port': '8443', via: '1.1 corp-proxy' } })
  const body = await res.body.json() as { headers: Record<string, string> }
  expect(body.headers['x-forwarded-port']).toBe('8443')
  expect(body.headers.via).toBe('1.1 corp-proxy, 1.1 fly.io')
})
