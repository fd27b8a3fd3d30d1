import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect as h2connect, createServer as createH2cServer } from 'node:http2'
import { afterEach, expect, test } from 'vitest'
import { EdgeProxyError } from '../../../schemas/errors.js'
import { waitFor } from '../../../test/helpers/wait-for.js'
import { type BackhaulFixture, readAll, startBackhaulFixture, tcpMachine } from './backhaul-fixture.js'

let f: BackhaulFixture | undefined
afterEach(async () => { await f?.stop(); f = undefined })

const client = { ip: '203.0.113.7', port: 51234, localAddress: '127.0.0.1', localPort: 9000, tls: false, servername: undefined }

test('a stream reaches a Machine on another node: bytes both ways, half-close passed on as a FIN', async () => {
  f = await startBackhaulFixture()
  const m = await tcpMachine((s) => {
    s.on('data', (c: Buffer) => s.write(c.toString().toUpperCase()))
    s.on('end', () => s.end('bye'))
  })
  await f.deploy(m.port)
  const machine = await f.addMachine(m)

  const stream = await f.open(machine, m.port)
  const all = readAll(stream)
  stream.write('hello ')
  stream.write('backhaul')
  stream.end()

  expect((await all).toString()).toBe('HELLO BACKHAULbye')
  expect(m.connections).toHaveLength(1)
  expect(Buffer.concat(m.connections[0].received).toString()).toBe('hello backhaul')
  await waitFor(() => f!.client.stats().streams === 0, { what: 'the stream released on the edge' })
})

test('many streams share one connection, and 8 MiB each way arrives intact past the flow-control windows', async () => {
  f = await startBackhaulFixture()
  const m = await tcpMachine((s) => s.pipe(s))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)

  const payloads = Array.from({ length: 4 }, () => randomBytes(8 * 1024 * 1024))
  const results = await Promise.all(payloads.map(async (p) => {
    const stream = await f!.open(machine, m.port)
    const all = readAll(stream, 20_000)
    stream.end(p)
    return await all
  }))
  for (let i = 0; i < payloads.length; i++) {
    expect(results[i].length).toBe(payloads[i].length)
    expect(createHash('sha256').update(results[i]).digest('hex')).toBe(createHash('sha256').update(payloads[i]).digest('hex'))
  }
  expect(f.client.stats()).toMatchObject({ dials: 1, connections: 1 })
  expect(f.listener.stats()).toMatchObject({ connectionsAccepted: 1, streamsOpened: 4 })
}, 30_000)

test('a slow reader holds back only its own stream: the sender waits for window, the other stream flows', async () => {
  f = await startBackhaulFixture()
  const big = randomBytes(4 * 1024 * 1024)
  const m = await tcpMachine((s) => s.once('data', (c: Buffer) => { if (c.toString() === 'big') s.end(big); else { s.write(c); s.pipe(s) } }))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)

  const slow = await f.open(machine, m.port)
  slow.on('error', () => { /* asserted through readAll below */ })
  slow.pause()
  slow.write('big')
  await waitFor(() => slow.readableLength >= 128 * 1024, { what: 'the first bytes of the 4 MiB waiting unread at the edge' })

  const fast = await f.open(machine, m.port)
  const echoed = readAll(fast)
  fast.end('still flowing')
  expect((await echoed).toString()).toBe('still flowing')
  // the worker stopped at the stream's window (256 KiB): the rest waits on the worker and in the Machine
  expect(slow.readableLength).toBeLessThanOrEqual(256 * 1024)

  const rest = readAll(slow, 20_000)
  slow.resume()
  expect((await rest).equals(big)).toBe(true)
}, 30_000)

test('a Machine reset reaches the edge as EP_MACHINE_RESET; an edge reset ends the Machine connection', async () => {
  f = await startBackhaulFixture()
  const m = await tcpMachine((s) => s.once('data', (c: Buffer) => { if (c.toString() === 'reset') s.resetAndDestroy() }))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)

  const a = await f.open(machine, m.port)
  a.write('reset')
  const [err] = (await once(a, 'error')) as [EdgeProxyError]
  expect(err).toBeInstanceOf(EdgeProxyError)
  expect(err.code).toBe('EP_MACHINE_RESET')
  expect(err.message).toContain(`Machine ${machine.id} reset the connection`)

  const b = await f.open(machine, m.port)
  b.write('hold')
  await waitFor(() => m.connections.length === 2 && m.connections[1].received.length > 0, { what: 'the second connection on the Machine' })
  const ended = once(m.connections[1].socket, 'end')
  b.destroy()
  await ended // the worker closed its side, as the proxy does for a client that went away
})

test('an h2c session (h2_backend) runs over a backhaul stream as over a socket', async () => {
  f = await startBackhaulFixture()
  const h2 = createH2cServer((req, res) => res.end(`h2 ${req.url}`))
  const m = await tcpMachine((s) => h2.emit('connection', s))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)
  const stream = await f.open(machine, m.port)
  const session = h2connect(`http://${machine.id}:${m.port}`, { createConnection: () => stream })
  try {
    const req = session.request({ ':path': '/grpc.Service/Call' })
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    const [headers] = (await once(req, 'response')) as [Record<string, unknown>]
    await once(req, 'end')
    expect(headers[':status']).toBe(200)
    expect(Buffer.concat(chunks).toString()).toBe('h2 /grpc.Service/Call')
  } finally {
    session.destroy()
    h2.close()
  }
})
