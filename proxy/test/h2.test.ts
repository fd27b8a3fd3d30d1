import { connect as h2connect, createServer as createH2cServer, type Http2Server, type ServerHttp2Stream } from 'node:http2'
import { once } from 'node:events'
import { afterEach, expect, test } from 'vitest'
import { startHarness, type Harness } from './harness.js'
import { run } from './tools.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

function curl(args: string[]) {
  return run('curl', ['-sS', '--max-time', '10', ...args])
}

/** A gRPC-style Machine: h2c only (prior knowledge), echoes what it got. */
function h2cMachine(): (m: { addr: string }) => Http2Server {
  return (m) => {
    const server = createH2cServer()
    server.on('stream', (stream: ServerHttp2Stream, headers) => {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        const body = JSON.stringify({ machine: m.addr, protocol: 'h2c', method: headers[':method'], path: headers[':path'], authority: headers[':authority'], headers, body: Buffer.concat(chunks).toString() })
        const grpc = headers.te === 'trailers'
        stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-app': 'grpc-ish' }, { waitForTrailers: grpc })
        if (grpc) stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }))
        stream.end(body)
      })
    })
    return server as unknown as Http2Server
  }
}

async function h2cApp(): Promise<Harness> {
  const harness = await startHarness()
  const { port, machines } = await harness.customMachines(1, h2cMachine() as never)
  await harness.deploy(`app = "grpc"\n[http_service]\ninternal_port = ${port}\n[http_service.http_options]\nh2_backend = true\n`)
  await harness.addMachine('grpc', machines[0])
  return harness
}

test('h2_backend: an HTTP/2 client reaches an h2c-only Machine', async () => {
  h = await h2cApp()
  const port = h.port(443)
  const r = await curl(['-k', '--http2', '-D', '-', '--resolve', `grpc.localhost:${port}:127.0.0.1`, '--data-binary', 'ping', `https://grpc.localhost:${port}/svc/Method`])
  expect(r.code).toBe(0)
  expect(r.stdout).toMatch(/^HTTP\/2 200/)
  expect(r.stdout).toMatch(/x-app: grpc-ish/)
  const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(body).toMatchObject({ protocol: 'h2c', method: 'POST', path: '/svc/Method', body: 'ping' })
  expect(body.headers['x-forwarded-proto']).toBe('https')
  expect(body.headers.via).toBe('2 fly.io')
})

test('h2_backend: an HTTP/1.1 client reaches it too, bodies chunked both ways', async () => {
  h = await h2cApp()
  const port = h.port(80)
  const r = await curl(['--http1.1', '-D', '-', '-H', 'Host: grpc.localhost', '-H', 'Transfer-Encoding: chunked', '--data-binary', 'hello h2c', `http://127.0.0.1:${port}/plain`])
  expect(r.code).toBe(0)
  expect(r.stdout).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
  expect(r.stdout).toMatch(/Transfer-Encoding: chunked/i)
  expect(r.stdout).toMatch(/Fly-Request-Id: /)
  const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(body).toMatchObject({ protocol: 'h2c', method: 'POST', path: '/plain', authority: 'grpc.localhost', body: 'hello h2c' })
  expect(body.headers['x-forwarded-proto']).toBe('http')
})

test('HTTP/2 client to an HTTP/1.1 Machine: request body and response arrive intact', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(`app = "web"\n[http_service]\ninternal_port = ${port}\n`)
  await h.addMachine('web', machines[0])
  const p = h.port(443)
  const payload = 'x'.repeat(200_000)
  const r = await run('curl', ['-sS', '--max-time', '10', '-k', '--http2', '--resolve', `web.localhost:${p}:127.0.0.1`, '--data-binary', '@-', `https://web.localhost:${p}/up`], { input: payload })
  expect(r.code).toBe(0)
  const body = JSON.parse(r.stdout)
  expect(body.body.length).toBe(payload.length)
  expect(body.method).toBe('POST')
})

test('h2_backend: gRPC-style te: trailers reaches the Machine and its trailers reach the client', async () => {
  h = await h2cApp()
  const session = h2connect(`https://127.0.0.1:${h.port(443)}`, { rejectUnauthorized: false, servername: 'grpc.localhost' })
  try {
    const req = session.request({ ':method': 'POST', ':path': '/pkg.Svc/Call', ':authority': 'grpc.localhost', te: 'trailers', 'content-type': 'application/grpc' })
    req.end('payload')
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    const gotTrailers = once(req, 'trailers') as Promise<[Record<string, string>]>
    const ended = once(req, 'end')
    const [[trailers]] = await Promise.all([gotTrailers, ended])
    expect(trailers['grpc-status']).toBe('0')
    expect(trailers['grpc-message']).toBe('ok')
    const body = JSON.parse(Buffer.concat(chunks).toString())
    expect(body.headers.te).toBe('trailers')
    expect(body.path).toBe('/pkg.Svc/Call')
  } finally {
    session.close()
  }
})
