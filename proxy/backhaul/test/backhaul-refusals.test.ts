import { once } from 'node:events'
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { afterEach, expect, test } from 'vitest'
import { BACKHAUL_ALPN } from '../../../schemas/backhaul.js'
import { waitFor } from '../../../test/helpers/wait-for.js'
import { backhaulListener } from '../backhaul-listener.js'
import { controlFrame, Deframer, F_OPEN, F_OPEN_FAIL, F_OPEN_OK } from '../frames.js'
import { type BackhaulFixture, EDGE, startBackhaulFixture, tcpMachine, type TestMachine, WORKER } from './backhaul-fixture.js'
import { testCa } from './fleet-certs.js'
import pino from 'pino'
import { BackhaulClient } from '../backhaul-client.js'

let f: BackhaulFixture | undefined
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  await f?.stop()
  f = undefined
})

async function fixtureWithMachine(): Promise<{ f: BackhaulFixture; m: TestMachine; openFrame: Buffer }> {
  f = await startBackhaulFixture()
  const m = await tcpMachine((s) => s.pipe(s))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)
  const openFrame = controlFrame(F_OPEN, 1, Buffer.from(JSON.stringify({ v: 1, machine: machine.id, port: m.port, edge: { node: EDGE, region: 'ams' } })))
  return { f, m, openFrame }
}

function listenerPort(fx: BackhaulFixture): number {
  return Number(fx.listener.address().split(':').pop())
}

/** Connects with these TLS options, sends a valid OPEN once the handshake is done, and reports what came back. */
async function tryTls(fx: BackhaulFixture, openFrame: Buffer, options: ConnectionOptions): Promise<{ handshake: boolean; received: number; error: string | undefined }> {
  const socket = tlsConnect({ host: '127.0.0.1', port: listenerPort(fx), ALPNProtocols: [BACKHAUL_ALPN], servername: WORKER, ...options })
  let received = 0
  let error: string | undefined
  let handshake = false
  socket.on('data', (c: Buffer) => { received += c.length })
  socket.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message })
  socket.once('secureConnect', () => { handshake = true; socket.write(openFrame) })
  await new Promise((resolve) => socket.once('close', resolve))
  return { handshake, received, error }
}

test('a plain TCP client is dropped before any frame is read, even one sending a valid OPEN', async () => {
  const { f: fx, m, openFrame } = await fixtureWithMachine()
  const socket = netConnect({ host: '127.0.0.1', port: listenerPort(fx) })
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  socket.on('error', () => { /* the close below is what counts */ })
  socket.once('connect', () => socket.write(openFrame))
  await new Promise((resolve) => socket.once('close', resolve))
  // whatever came back is a TLS alert at most, never a frame (OPEN_OK / OPEN_FAIL start with 0x02 / 0x03)
  const reply = Buffer.concat(chunks)
  expect(reply.length === 0 || reply[0] === 0x15).toBe(true)
  expect(m.connections).toHaveLength(0)
  await waitFor(() => fx.listener.stats().handshakeFailures === 1, { what: 'the failed handshake counted' })
})

test('a TLS client without a certificate, or with one from another CA, never reaches a Machine', async () => {
  const { f: fx, m, openFrame } = await fixtureWithMachine()
  const noCert = await tryTls(fx, openFrame, { ca: fx.ca.certPem })
  expect(noCert.received).toBe(0)
  expect(noCert.error).toMatch(/CERTIFICATE_REQUIRED|ECONNRESET|EPIPE/)

  const other = await testCa('another fleet CA')
  cleanups.push(() => other.remove())
  const foreign = await other.issue(EDGE)
  const wrongCa = await tryTls(fx, openFrame, { ca: fx.ca.certPem, cert: foreign.certPem, key: foreign.keyPem })
  expect(wrongCa.received).toBe(0)

  // a fleet certificate that only allows server authentication is no client identity either
  const serverOnly = await fx.ca.issue(EDGE, 'serverAuth')
  const wrongUsage = await tryTls(fx, openFrame, { ca: fx.ca.certPem, cert: serverOnly.certPem, key: serverOnly.keyPem })
  expect(wrongUsage.received).toBe(0)

  expect(m.connections).toHaveLength(0)
  expect(fx.listener.stats()).toMatchObject({ opens: 0, streamsOpened: 0 })
  expect(fx.listener.stats().handshakeFailures + fx.listener.stats().peersRejected).toBe(3)
})

test('the same OPEN with a fleet certificate is answered: the refusals above were the certificates', async () => {
  const { f: fx, m, openFrame } = await fixtureWithMachine()
  const cert = await fx.ca.issue('lhr-1')
  const socket = tlsConnect({ host: '127.0.0.1', port: listenerPort(fx), ALPNProtocols: [BACKHAUL_ALPN], servername: WORKER, ca: fx.ca.certPem, cert: cert.certPem, key: cert.keyPem })
  const frames: number[] = []
  const deframer = new Deframer({ onControl: (type) => frames.push(type), onData: () => undefined, onProtocolError: () => undefined })
  socket.on('data', (c: Buffer) => deframer.feed(c))
  socket.once('secureConnect', () => socket.write(openFrame))
  await waitFor(() => frames.length > 0, { what: 'an answer to the OPEN' })
  expect(frames[0]).toBe(F_OPEN_OK)
  await waitFor(() => m.connections.length === 1, { what: 'the Machine connection' })
  // a malformed OPEN is refused with a reason and the connection stays usable
  socket.write(controlFrame(F_OPEN, 3, Buffer.from('{"v":1,"machine":"nope"}')))
  await waitFor(() => frames.length > 1, { what: 'an answer to the malformed OPEN' })
  expect(frames[1]).toBe(F_OPEN_FAIL)
  socket.destroy()
})

test('an edge refuses a worker whose certificate names another node', async () => {
  const { f: fx, m } = await fixtureWithMachine()
  // a second listener presenting syd-1's fleet certificate, published as if it were iad-1's backhaul
  const impostorCert = await fx.ca.issue('syd-1')
  const impostor = backhaulListener({ host: '127.0.0.1', port: 0, tls: { ...impostorCert, caPem: fx.ca.certPem } })({ catalog: fx.catalog, log: pino({ level: 'silent' }) })
  await impostor.start()
  cleanups.push(() => impostor.stop())
  const edgeCert = await fx.ca.issue(EDGE)
  const client = new BackhaulClient({ tls: { ...edgeCert, caPem: fx.ca.certPem } }, pino({ level: 'silent' }))
  cleanups.push(() => client.close())
  const err = await new Promise<Error | undefined>((resolve) => {
    client.open(WORKER, impostor.address(), { v: 1, machine: m.record!.id, port: m.port, edge: { node: EDGE, region: 'ams' } }, (e) => resolve(e))
  })
  expect(err).toMatchObject({ code: 'EP_BACKHAUL_UNREACHABLE', message: expect.stringContaining('"syd-1", expected "iad-1"') })
  expect(m.connections).toHaveLength(0)
})

test('the worker checks each OPEN against its own catalog and says why it refuses', async () => {
  f = await startBackhaulFixture()
  const m = await tcpMachine((s) => s.pipe(s))
  await f.deploy(m.port)
  const running = await f.addMachine(m)
  const stopped = await f.addMachine(await tcpMachine(), { state: 'stopped' })
  const elsewhere = await f.addMachine(await tcpMachine(), { node: 'syd-1' })
  const unbound = await tcpMachine()
  const refused = await f.addMachine(unbound)
  unbound.server.close()
  await once(unbound.server, 'close')
  // the catalog of an edge says the Machine is on iad-1, but iad-1 knows better
  const misplaced = { ...elsewhere, node: WORKER }

  // refusals that contradict the edge's catalog reach the client as 502s, the worker's code in the message
  await expect(f.open(misplaced, m.port)).rejects.toMatchObject({ code: 'EP_MACHINE_UNREACHABLE', status: 502, message: expect.stringMatching(/\(it runs on syd-1\).*refused it: EP_MACHINE_NOT_FOUND/) })
  await expect(f.open(stopped, m.port)).rejects.toMatchObject({ code: 'EP_MACHINE_UNREACHABLE', message: expect.stringContaining('is stopped on node iad-1') })
  await expect(f.open(running, 22)).rejects.toMatchObject({ code: 'EP_MACHINE_UNREACHABLE', status: 502, message: expect.stringMatching(/port 22 is not the internal_port.*refused it: EP_NO_SERVICE/) })
  await expect(f.open(refused, m.port)).rejects.toMatchObject({ code: 'EP_MACHINE_UNREACHABLE', message: expect.stringContaining('nothing listens on') })
  expect(f.listener.stats()).toMatchObject({ opens: 4, refused: 4, streamsOpened: 0 })
  // and a good OPEN on the same connection still works
  const ok = await f.open(running, m.port)
  ok.on('error', () => { /* closed with the fixture */ })
  ok.end('ping')
  expect((await once(ok, 'data'))[0].toString()).toBe('ping')
})

test('the PROXY header on the worker side carries the original client, in v1 and v2', async () => {
  f = await startBackhaulFixture()
  const m = await tcpMachine(() => undefined)
  await f.deploy(m.port)
  const machine = await f.addMachine(m)
  const client = { ip: '203.0.113.7', port: 51234, localAddress: '127.0.0.1', localPort: 9000, tls: false, servername: undefined }

  const v1 = await f.open(machine, m.port, { client, proxyProto: 'v1' })
  v1.write('hello')
  await waitFor(() => Buffer.concat(m.connections[0]?.received ?? []).toString().endsWith('hello'), { what: 'the v1 header and bytes' })
  expect(Buffer.concat(m.connections[0].received).toString()).toBe('PROXY TCP4 203.0.113.7 127.0.0.1 51234 9000\r\nhello')

  const v2 = await f.open(machine, m.port, { client, proxyProto: 'v2' })
  v2.write('x')
  await waitFor(() => Buffer.concat(m.connections[1]?.received ?? []).length >= 29, { what: 'the v2 header' })
  const header = Buffer.concat(m.connections[1].received)
  expect(header.subarray(0, 12).toString('latin1')).toBe('\r\n\r\n\0\r\nQUIT\n')
  expect([...header.subarray(16, 20)]).toEqual([203, 0, 113, 7])
  expect(header.readUInt16BE(24)).toBe(51234)
  v1.destroy()
  v2.destroy()
  expect(m.connections).toHaveLength(2)
})
