import { once } from 'node:events'
import { afterEach, expect, test } from 'vitest'
import type { EdgeProxyError } from '../../../schemas/errors.js'
import { type ChaosRelay, startChaosRelay } from '../../../test/helpers/chaos-relay.js'
import { waitFor } from '../../../test/helpers/wait-for.js'
import { type BackhaulFixture, readAll, startBackhaulFixture, tcpMachine } from './backhaul-fixture.js'

let f: BackhaulFixture | undefined
let relay: ChaosRelay | undefined
afterEach(async () => {
  await f?.stop()
  await relay?.close()
  f = undefined
  relay = undefined
})

async function relayedFixture(opts: Parameters<typeof startBackhaulFixture>[0] = {}) {
  f = await startBackhaulFixture(opts)
  const [host, port] = f.listener.address().split(':')
  relay = await startChaosRelay({ target: { host, port: Number(port) } })
  f.publish(`${relay.host}:${relay.port}`)
  const m = await tcpMachine((s) => s.pipe(s))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)
  return { f, relay, m, machine }
}

test('a backhaul link that breaks fails its open streams with EP_BACKHAUL_UNREACHABLE; the next open redials', async () => {
  const { f: fx, relay: r, m, machine } = await relayedFixture()
  const a = await fx.open(machine, m.port)
  a.write('one')
  expect((await once(a, 'data'))[0].toString()).toBe('one')

  const failed = once(a, 'error') as Promise<[EdgeProxyError]>
  r.cut()
  const [err] = await failed
  expect(err).toMatchObject({ code: 'EP_BACKHAUL_UNREACHABLE', message: expect.stringContaining('node iad-1') })

  const b = await fx.open(machine, m.port)
  const echoed = readAll(b)
  b.end('two')
  expect((await echoed).toString()).toBe('two')
  expect(fx.client.stats().dials).toBe(2)
})

test('a node that refuses connections fails opens at once for a short while instead of redialling each time', async () => {
  const { f: fx, relay: r, m, machine } = await relayedFixture({ client: { retryDelayMs: 300 } })
  r.set({ mode: 'refuse' })
  await expect(fx.open(machine, m.port)).rejects.toMatchObject({ code: 'EP_BACKHAUL_UNREACHABLE' })
  const started = performance.now()
  const fast = await Promise.allSettled(Array.from({ length: 20 }, () => fx.open(machine, m.port)))
  expect(performance.now() - started).toBeLessThan(250)
  expect(fast.every((x) => x.status === 'rejected' && (x.reason as EdgeProxyError).code === 'EP_BACKHAUL_UNREACHABLE')).toBe(true)
  expect(fx.client.stats()).toMatchObject({ dials: 1, fastFailures: 20 })

  r.reset()
  const ok = await waitFor(async () => fx.open(machine, m.port).catch(() => undefined), { timeoutMs: 5000, what: 'a successful open after healing' })
  const echoed = readAll(ok)
  ok.end('healed')
  expect((await echoed).toString()).toBe('healed')
})

test('a silent (black-holed) worker is detected by ping: streams fail, and an open times out instead of hanging', async () => {
  const { f: fx, relay: r, m, machine } = await relayedFixture({ client: { pingIntervalMs: 100, pingTimeoutMs: 300, openTimeoutMs: 500, connectTimeoutMs: 500 }, listener: { drainMs: 200 } })
  const a = await fx.open(machine, m.port)
  const failed = once(a, 'error') as Promise<[EdgeProxyError]>
  r.set({ mode: 'blackhole' })
  const t0 = performance.now()
  const [err] = await failed
  expect(err).toMatchObject({ code: 'EP_BACKHAUL_UNREACHABLE', message: expect.stringContaining('did not answer a ping within 300 ms') })
  expect(performance.now() - t0).toBeLessThan(2000)
  // a new connection is accepted by the relay but nothing answers: the handshake times out (connectTimeoutMs)
  await expect(fx.open(machine, m.port)).rejects.toMatchObject({ code: 'EP_BACKHAUL_UNREACHABLE' })
})

test('a worker that stops drains: open streams finish, new opens are refused', async () => {
  f = await startBackhaulFixture({ listener: { drainMs: 5000 } })
  const m = await tcpMachine((s) => s.on('data', (c: Buffer) => s.write(c)))
  await f.deploy(m.port)
  const machine = await f.addMachine(m)
  const a = await f.open(machine, m.port)
  a.write('before')
  expect((await once(a, 'data'))[0].toString()).toBe('before')

  const stopping = f.listener.stop()
  await expect(waitFor(async () => {
    try { await f!.open(machine, m.port); return false } catch (err) { return (err as EdgeProxyError).code }
  }, { what: 'an open refused while the worker drains' })).resolves.toMatch(/EP_SHUTTING_DOWN|EP_BACKHAUL_UNREACHABLE/)
  a.write('during')
  expect((await once(a, 'data'))[0].toString()).toBe('during')
  const rest = readAll(a)
  a.end()
  m.connections[0].socket.end()
  await rest
  await stopping
})

test('a node that cannot be dialled is reported unreachable, redialled in the background, and reported back', async () => {
  const { f: fx, relay: r, m, machine } = await relayedFixture({ client: { retryDelayMs: 50 } })
  const events: Array<[string, boolean]> = []
  fx.client.onReachability((node, reachable) => events.push([node, reachable]))

  const a = await fx.open(machine, m.port)
  a.on('error', () => { /* the cut below fails it */ })
  r.set({ mode: 'refuse' })
  r.cut() // a connection that worked breaks: unreachable at once, and a redial (refused) starts right away
  await waitFor(() => events.length === 1, { what: 'the node reported unreachable' })
  expect(events).toEqual([['iad-1', false]])
  await waitFor(() => fx.client.stats().dialFailures >= 2, { what: 'background redials while nothing is routed there' })
  expect(fx.client.stats().opens).toBe(1)

  r.reset()
  await waitFor(() => events.length === 2, { timeoutMs: 8000, what: 'the node reported reachable again, with no traffic asking' })
  expect(events).toEqual([['iad-1', false], ['iad-1', true]])
  const b = await fx.open(machine, m.port)
  const echoed = readAll(b)
  b.end('back')
  expect((await echoed).toString()).toBe('back')
})

test('streams a worker holds to a Machine count as that Machine\'s load while they are open', async () => {
  const { f: fx, m, machine } = await relayedFixture()
  const load = new Map<string, number>()
  fx.listener.countLoadInto({ add: (id, delta) => load.set(id, (load.get(id) ?? 0) + delta) })
  const a = await fx.open(machine, m.port)
  const b = await fx.open(machine, m.port)
  await waitFor(() => load.get(machine.id) === 2, { what: 'two streams counted' })
  const ended = readAll(a)
  a.end()
  m.connections[0].socket.end()
  await ended
  await waitFor(() => load.get(machine.id) === 1, { what: 'a finished stream uncounted' })
  b.destroy()
  await waitFor(() => load.get(machine.id) === 0, { what: 'a reset stream uncounted' })
})
