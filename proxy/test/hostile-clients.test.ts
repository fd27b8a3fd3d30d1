import { afterEach, describe, expect, test } from 'vitest'
import { httpApp, startHarness, type Harness } from './harness.js'
import { RawConnection, rawExchange } from './raw-client.js'

let h: Harness | undefined
let conn: RawConnection | undefined
afterEach(async () => {
  conn?.close()
  conn = undefined
  await h?.stop()
  h = undefined
})

async function oneMachine(init: Parameters<typeof startHarness>[0] = {}): Promise<Harness> {
  const harness = await startHarness(init)
  const { port, machines } = await harness.httpMachines(1)
  await harness.deploy(httpApp('web', port))
  await harness.addMachine('web', machines[0])
  return harness
}

/** The response a raw request gets, and whether the proxy closed the connection after it. */
async function send(raw: string | Buffer): Promise<string> {
  return rawExchange(h!.port(80), raw)
}

describe('request smuggling vectors get 400 and a closed connection; the Machine never sees them', () => {
  test.each([
    ['Content-Length and Transfer-Encoding together', 'POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['duplicate Content-Length', 'POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde'],
    ['a Transfer-Encoding other than chunked', 'POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Folded: a\r\n b\r\n\r\n'],
    ['bare LF line ends', 'GET / HTTP/1.1\nHost: web.localhost\n\n'],
    ['a space before the colon', 'POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length : 4\r\n\r\nabcd'],
    ['a non-numeric Content-Length', 'POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 0x10\r\n\r\n'],
    ['bad chunked framing in the body', 'POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX\r\n0\r\n\r\n'],
  ])('%s', async (_name, raw) => {
    h = await oneMachine()
    const text = await send(raw)
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/)
    expect(text).toContain('edgeproxy-error: EP_BAD_REQUEST\r\n')
    expect(text).toContain('Connection: close\r\n')
    expect(h.machines[0].requests).toHaveLength(0)
  })
})

describe('limits', () => {
  test('a header block over 64 KiB gets 431', async () => {
    h = await oneMachine()
    const big = `GET / HTTP/1.1\r\nHost: web.localhost\r\n${'X-Pad: '.padEnd(1000, 'a')}\r\n`.repeat(1) + `${'X-More: '.padEnd(1000, 'b')}\r\n`.repeat(70) + '\r\n'
    const text = await send(big)
    expect(text).toMatch(/^HTTP\/1\.1 431 /)
    expect(text).toContain('edgeproxy-error: EP_HEADERS_TOO_LARGE')
    expect(h.machines[0].requests).toHaveLength(0)
  })

  test('a request target over 8 KiB gets 414', async () => {
    h = await oneMachine()
    const text = await send(`GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: web.localhost\r\n\r\n`)
    expect(text).toMatch(/^HTTP\/1\.1 414 /)
    expect(text).toContain('edgeproxy-error: EP_URI_TOO_LONG')
  })

  test('an endless request line gets 414 before the head is complete', async () => {
    h = await oneMachine()
    conn = await RawConnection.open(h.port(80))
    conn.write(`GET /${'a'.repeat(20_000)}`)
    const text = await conn.until((t) => t.includes('\r\n\r\n'))
    expect(text).toMatch(/^HTTP\/1\.1 414 /)
  })
})

describe('timeouts (slowloris)', () => {
  test('a head that trickles in slower than the header timeout gets 408 and is closed', async () => {
    h = await oneMachine({ timeouts: { headersMs: 300, idleMs: 10_000 } })
    conn = await RawConnection.open(h.port(80))
    conn.write('GET / HTTP/1.1\r\nHost: web.localhost\r\n')
    const text = await conn.until(() => false, 5000).catch(() => conn!.received)
    expect(conn.closed).toBe(true)
    expect(text).toMatch(/^HTTP\/1\.1 408 /)
    expect(text).toContain('edgeproxy-error: EP_REQUEST_TIMEOUT')
  })

  test('an idle keep-alive connection is closed after the idle timeout', async () => {
    h = await oneMachine({ timeouts: { headersMs: 10_000, idleMs: 300 } })
    conn = await RawConnection.open(h.port(80))
    conn.write('GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n')
    await conn.until((t) => t.endsWith('}'))
    const startedIdle = Date.now()
    await conn.until(() => false, 5000).catch(() => undefined)
    expect(conn.closed).toBe(true)
    // idle time is read off the proxy's coarse clock, which the sweep (idleMs / 5 = 60 ms here) moves: a
    // connection can be closed up to one tick early, never earlier
    expect(Date.now() - startedIdle).toBeGreaterThanOrEqual(300 - 60)
  })
})

test('http_options.idle_timeout of the port overrides the proxy idle timeout', async () => {
  h = await startHarness({ timeouts: { headersMs: 10_000, idleMs: 60_000 } })
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(`app = "web"\n[[services]]\ninternal_port = ${port}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n[services.ports.http_options]\nidle_timeout = 1\n`)
  await h.addMachine('web', machines[0])
  conn = await RawConnection.open(h.port(80))
  conn.write('GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n')
  await conn.until((t) => t.endsWith('}'))
  const idleFrom = Date.now()
  await conn.until(() => false, 5000).catch(() => undefined)
  expect(conn.closed).toBe(true)
  expect(Date.now() - idleFrom).toBeGreaterThanOrEqual(900)
})
