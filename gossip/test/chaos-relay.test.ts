import { once } from 'node:events'
import net from 'node:net'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { type ChaosRelay, startChaosRelay } from '../../test/helpers/chaos-relay.js'

/** An echo server: what the relay forwards comes straight back. */
let echo: net.Server
let relay: ChaosRelay | undefined
const clients: net.Socket[] = []

beforeEach(async () => {
  echo = net.createServer((s) => { s.on('error', () => { /* the relay reset it */ }); s.pipe(s) })
  echo.listen(0, '127.0.0.1')
  await once(echo, 'listening')
})
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy()
  await relay?.close()
  relay = undefined
  echo.close()
})

async function startRelay(seed?: number): Promise<ChaosRelay> {
  relay = await startChaosRelay({ target: { host: '127.0.0.1', port: (echo.address() as net.AddressInfo).port }, ...(seed === undefined ? {} : { seed }) })
  return relay
}

async function connect(r: ChaosRelay, from?: string): Promise<net.Socket> {
  const s = net.connect({ host: r.host, port: r.port, ...(from === undefined ? {} : { localAddress: from }) })
  clients.push(s)
  s.on('error', () => { /* asserted through 'close' */ })
  await once(s, 'connect')
  return s
}

/** Sends `text` and resolves with the echo and the round trip in ms. */
async function roundTrip(s: net.Socket, text: string, timeoutMs = 3000): Promise<{ reply: string; ms: number }> {
  const start = performance.now()
  let got = ''
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { s.off('data', onData); reject(new Error(`no echo within ${timeoutMs} ms`)) }, timeoutMs)
    const onData = (chunk: Buffer): void => {
      got += chunk.toString()
      if (got.length >= text.length) {
        clearTimeout(timer)
        s.off('data', onData)
        resolve({ reply: got, ms: performance.now() - start })
      }
    }
    s.on('data', onData)
    s.write(text)
  })
}

async function closed(s: net.Socket, timeoutMs = 3000): Promise<void> {
  if (s.destroyed) return
  // not events.once: it rejects on the 'error' (the reset) that precedes 'close'
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('socket still open')), timeoutMs)
    s.once('close', () => { clearTimeout(timer); resolve() })
  })
}

test('passes bytes both ways and counts them', async () => {
  const r = await startRelay()
  const s = await connect(r)
  expect((await roundTrip(s, 'hello')).reply).toBe('hello')
  expect(r.stats()).toMatchObject({ accepted: 1, active: 1, bytesUp: 5, bytesDown: 5 })
})

test('delays each direction by its own amount', async () => {
  const r = await startRelay()
  r.set({ delayMs: { up: 60, down: 30 } })
  const s = await connect(r)
  const { reply, ms } = await roundTrip(s, 'ping')
  expect(reply).toBe('ping')
  expect(ms).toBeGreaterThanOrEqual(88) // up + down, never less (a lower bound, not a speed target)
})

test('refuse resets open connections and new ones; reset heals', async () => {
  const r = await startRelay()
  const s = await connect(r)
  r.set({ mode: 'refuse' })
  await closed(s)
  const again = net.connect({ host: r.host, port: r.port })
  clients.push(again)
  again.on('error', () => { /* expected reset */ })
  await closed(again)
  expect(r.stats().refused).toBe(1)
  r.reset()
  expect((await roundTrip(await connect(r), 'back')).reply).toBe('back')
})

test('black-hole: an open connection stalls without closing and gets its bytes on heal; a new one is never answered', async () => {
  const r = await startRelay()
  const s = await connect(r)
  r.set({ mode: 'blackhole' })
  const held = roundTrip(s, 'held', 5000)
  const fresh = await connect(r)
  await expect(roundTrip(fresh, 'nobody', 300)).rejects.toThrow(/no echo/)
  expect(s.destroyed).toBe(false)
  r.reset()
  expect((await held).reply).toBe('held')
  expect((await roundTrip(s, 'after')).reply).toBe('after')
})

test('rules scoped to a source address cut that client only', async () => {
  const r = await startRelay()
  const a = await connect(r, '127.0.0.21')
  const b = await connect(r, '127.0.0.22')
  r.set({ mode: 'refuse' }, { from: '127.0.0.21' })
  await closed(a)
  expect((await roundTrip(b, 'still here')).reply).toBe('still here')
})

test('connection loss drops about its share of new connections', async () => {
  const r = await startRelay(42)
  r.set({ connectionLoss: 0.3 })
  const outcomes = await Promise.all(Array.from({ length: 60 }, async () => {
    const s = await connect(r)
    try {
      return (await roundTrip(s, 'x', 1000)).reply === 'x'
    } catch {
      return false
    }
  }))
  const lost = outcomes.filter((ok) => !ok).length
  expect(lost).toBe(r.stats().connectionsLost)
  expect(lost).toBeGreaterThan(5)
  expect(lost).toBeLessThan(40)
})
