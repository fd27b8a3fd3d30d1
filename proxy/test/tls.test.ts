import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, expect, test } from 'vitest'
import { REGION, startHarness, type Harness } from './harness.js'
import { opensslCertificate, run, servedSubject } from './tools.js'

let h: Harness | undefined
let dir: string | undefined
afterEach(async () => {
  await h?.stop()
  h = undefined
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  dir = undefined
})

/** An app with the usual two ports of [http_service]: 80 (http) and 443 (tls + http). */
async function tlsApp(extra = '', hostnames: string[] = []): Promise<Harness> {
  const harness = await startHarness()
  const { port, machines } = await harness.httpMachines(1)
  await harness.deploy(`app = "web"\n[http_service]\ninternal_port = ${port}\n${extra}\n`, hostnames)
  await harness.addMachine('web', machines[0])
  return harness
}

function curl(args: string[]) {
  return run('curl', ['-sS', '--max-time', '10', ...args])
}

test('SNI picks the added certificate, exact name first, then a wildcard one label up', async () => {
  h = await tlsApp('', ['secure.test', 'a.wild.test'])
  dir = await mkdtemp(join(tmpdir(), 'edgeproxy-tls-'))
  const exact = await opensslCertificate(['secure.test'])
  const wild = await opensslCertificate(['*.wild.test'])
  await h.catalog.putCert({ hostname: 'secure.test', ...exact })
  await h.catalog.putCert({ hostname: '*.wild.test', ...wild })
  await h.settle()
  await writeFile(join(dir, 'exact.pem'), exact.certPem)
  await writeFile(join(dir, 'wild.pem'), wild.certPem)
  const port = h.port(443)

  // curl verifies the chain against the certificate we added: success proves which one was served
  const r1 = await curl(['--cacert', join(dir, 'exact.pem'), '--resolve', `secure.test:${port}:127.0.0.1`, `https://secure.test:${port}/x`])
  expect(r1.code).toBe(0)
  expect(JSON.parse(r1.stdout).headers['x-forwarded-proto']).toBe('https')
  const r2 = await curl(['--cacert', join(dir, 'wild.pem'), '--resolve', `a.wild.test:${port}:127.0.0.1`, `https://a.wild.test:${port}/`])
  expect(r2.code).toBe(0)

  expect((await servedSubject(port, 'secure.test')).subject).toContain('CN = secure.test')
  expect((await servedSubject(port, 'a.wild.test')).subject).toContain('CN = *.wild.test')
})

test('without an added certificate a host gets its own self-signed one; the request says https', async () => {
  h = await tlsApp()
  const port = h.port(443)
  const served = await servedSubject(port, 'web.localhost')
  expect(served.subject).toContain('CN = web.localhost')
  const r = await curl(['-k', '-D', '-', '--resolve', `web.localhost:${port}:127.0.0.1`, `https://web.localhost:${port}/path`])
  expect(r.code).toBe(0)
  const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(body.headers['x-forwarded-proto']).toBe('https')
  expect(body.headers['x-forwarded-ssl']).toBe('on')
  expect(body.headers['x-forwarded-port']).toBe('443')
  expect(body.headers['fly-region']).toBe(REGION)
})

test('ALPN h2: an HTTP/2 client is served over h2 with Via 2 fly.io on both sides', async () => {
  h = await tlsApp()
  const port = h.port(443)
  const r = await curl(['-k', '--http2', '-D', '-', '--resolve', `web.localhost:${port}:127.0.0.1`, `https://web.localhost:${port}/h2?q=1`])
  expect(r.code).toBe(0)
  expect(r.stdout).toMatch(/^HTTP\/2 200/)
  expect(r.stdout).toMatch(/via: 2 fly\.io/i)
  expect(r.stdout).toMatch(/fly-request-id: [0-9A-Z]{26}-ams/i)
  const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(body.url).toBe('/h2?q=1')
  expect(body.headers.via).toBe('2 fly.io')
  expect(body.headers.host).toBe(`web.localhost:${port}`)
  expect(body.headers['x-forwarded-proto']).toBe('https')
})

test('TLS below 1.2 is refused, and tls_options.versions narrows it further', async () => {
  h = await tlsApp('[http_service.tls_options]\nversions = ["TLSv1.3"]\n')
  const port = h.port(443)
  // SECLEVEL=0 lets openssl offer TLS 1.1 at all (it succeeds against a server that allows it): the refusal is ours
  const old = await servedSubject(port, 'web.localhost', ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'])
  expect(old.code).not.toBe(0)
  expect(old.stdout + old.stderr).toMatch(/protocol version|no protocols available|alert/i)
  const r12 = await curl(['-k', '--tls-max', '1.2', '--resolve', `web.localhost:${port}:127.0.0.1`, `https://web.localhost:${port}/`])
  expect(r12.code).not.toBe(0)
  const r13 = await curl(['-k', '--tlsv1.3', '--resolve', `web.localhost:${port}:127.0.0.1`, `https://web.localhost:${port}/`])
  expect(r13.code).toBe(0)
})

test('force_https answers plain HTTP with 301 to the same host, path and query on https', async () => {
  h = await tlsApp('force_https = true')
  const r = await curl(['-D', '-', '-o', '/dev/null', '-H', 'Host: web.localhost:8080', `http://127.0.0.1:${h.port(80)}/a/b?c=d&e`])
  expect(r.stdout).toMatch(/^HTTP\/1\.1 301 /)
  expect(r.stdout).toContain(`Location: https://web.localhost:${h.port(443)}/a/b?c=d&e\r\n`)
  // and following it works end to end
  const port = h.port(443)
  const followed = await curl(['-k', '-L', '--resolve', `web.localhost:${port}:127.0.0.1`, '-H', 'Host: web.localhost', `http://127.0.0.1:${h.port(80)}/a`])
  expect(followed.code).toBe(0)
})

test('a client without SNI gets the fallback certificate and is routed by Host', async () => {
  h = await tlsApp()
  const port = h.port(443)
  expect((await servedSubject(port, undefined)).subject).toContain('CN = edgeproxy.invalid')
  const r = await curl(['-k', '-H', 'Host: web.localhost', `https://127.0.0.1:${port}/nosni`])
  expect(r.code).toBe(0)
  expect(JSON.parse(r.stdout).url).toBe('/nosni')
})
