import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { connect as h2Connect } from 'node:http2'
import { connect as netConnect, type Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { opensslCert } from '../../test/helpers/certs.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { startHarness, type Harness } from './harness.js'
import { refragment } from './tls-records.js'
import { run } from './tools.js'

/**
 * Which certificate each client is served (handlers/tls-front.ts, tls/client-hello.ts): the one added for
 * the SNI name — RSA as well as EC, although every common client offers ECDSA first and the fallback is
 * EC — a self-signed one for an app host without a certificate, the fallback without SNI. Over HTTP/1.1
 * and h2 ALPN, on a pg_tls port after the SSLRequest and with direct TLS, from node:tls and openssl.
 */

const RSA_HOST = 'rsa.example.test'
const EC_HOST = 'ec.example.test'
const BARE_HOST = 'bare.example.test' // the app answers to it; no certificate was added
const DB_HOST = 'db.example.test' // a pg_tls app with an RSA certificate
const HANDSHAKE_MS = 3000

let h: Harness
let dir: { path: string; remove: () => Promise<void> }
const fingerprint: Record<string, string> = {}
let pemOf: Record<string, string> = {}

beforeAll(async () => {
  dir = await tempDir('edgeproxy-tls-certs-')
  h = await startHarness({ timeouts: { handshakeMs: HANDSHAKE_MS } })
  const web = await h.httpMachines(1)
  await h.deploy(`app = "web"\n[http_service]\ninternal_port = ${web.port}\n`, [RSA_HOST, EC_HOST, BARE_HOST])
  await h.addMachine('web', web.machines[0])
  const db = await h.tcpMachines(1, (s) => { s.on('error', () => {}); s.pipe(s) })
  await h.deploy(`app = "db"\n[[services]]\ninternal_port = ${db.port}\n[[services.ports]]\nport = 5432\nhandlers = ["pg_tls"]\n`, [DB_HOST])
  await h.addMachine('db', db.machines[0])
  const made = {
    [RSA_HOST]: await opensslCert(dir.path, RSA_HOST, 2, 'rsa'),
    [EC_HOST]: await opensslCert(dir.path, EC_HOST, 2, 'ec'),
    [DB_HOST]: await opensslCert(dir.path, DB_HOST, 2, 'rsa'),
  }
  pemOf = {}
  for (const [host, c] of Object.entries(made)) {
    await h.catalog.putCert({ hostname: host, certPem: c.certPem, keyPem: c.keyPem })
    fingerprint[host] = new X509Certificate(c.certPem).fingerprint256
    pemOf[host] = c.certPem
  }
  expect(new X509Certificate(made[RSA_HOST].certPem).publicKey.asymmetricKeyType).toBe('rsa')
  expect(new X509Certificate(made[EC_HOST].certPem).publicKey.asymmetricKeyType).toBe('ec')
  await h.settle()
}, 60_000)

afterAll(async () => {
  await h?.stop()
  await dir?.remove()
}, 30_000)

interface Served { fingerprint: string; cn: string; alt: string | undefined; keyType: string | undefined; alpn: string | false | null }

/** Call once per socket: node hands out the peer's X509Certificate only once. */
function served(socket: TLSSocket): Served {
  const cert = socket.getPeerX509Certificate()
  if (cert === undefined) throw new Error('no peer certificate')
  return { fingerprint: cert.fingerprint256, cn: cert.subject.replace(/^CN=/, ''), alt: cert.subjectAltName, keyType: cert.publicKey.asymmetricKeyType, alpn: socket.alpnProtocol }
}

/** A node:tls client with default settings (it offers ECDSA signature algorithms first, as browsers do). */
function nodeTls(port: number, opts: { servername?: string; ALPNProtocols?: string[]; socket?: Duplex } = {}): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts })
  const timer = setTimeout(() => socket.destroy(new Error('TLS handshake did not finish in 10 s')), 10_000)
  return once(socket, 'secureConnect').then(() => { clearTimeout(timer); return socket }, (err: unknown) => { clearTimeout(timer); socket.destroy(); throw err })
}

/**
 * Destroys the client once the proxy has finished its side of the handshake: TLS 1.3 session tickets
 * are sent only after the proxy read the client's Finished. A destroy() right after 'secureConnect'
 * would reset the connection before that: a failed handshake for the proxy, counted in the stats that
 * tests below compare.
 */
async function close(socket: TLSSocket): Promise<void> {
  const timer = setTimeout(() => socket.destroy(new Error('no session ticket from the proxy in 5 s')), 5000)
  try {
    await once(socket, 'session')
  } finally {
    clearTimeout(timer)
    socket.destroy()
  }
}

/** One HTTP/1.1 request over the socket; the status line and the echo Machine's JSON. */
function http1(socket: TLSSocket, host: string, path: string): Promise<{ status: string; body: { url: string; headers: Record<string, string> } }> {
  return new Promise((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('no HTTP answer in 10 s')) }, 10_000)
    socket.on('data', (c: Buffer) => { text += c.toString() })
    socket.on('error', (err) => { clearTimeout(timer); reject(err) })
    socket.on('end', () => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ status: text.slice(0, text.indexOf('\r\n')), body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) })
    })
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
  })
}

/** An h2 request (ALPN h2, node:http2 defaults): what was served, and the answer. */
async function h2(port: number, servername: string | undefined, host: string, path: string): Promise<Served & { status: number; url: string }> {
  const session = h2Connect(`https://127.0.0.1:${port}`, { servername, rejectUnauthorized: false })
  const timer = setTimeout(() => session.destroy(new Error('h2 exchange did not finish in 10 s')), 10_000)
  try {
    await once(session, 'connect')
    const s = served(session.socket as TLSSocket)
    const req = session.request({ ':path': path, ':authority': host })
    const [headers] = await once(req, 'response') as [Record<string, string | number>]
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    await once(req, 'end')
    return { ...s, status: Number(headers[':status']), url: JSON.parse(body).url }
  } finally {
    clearTimeout(timer)
    session.destroy()
  }
}

/** `openssl s_client`: the served certificate's fingerprint (from the PEM it prints) and the ALPN result. */
async function sClient(port: number, args: string[]): Promise<{ fingerprint: string; alpn: string | undefined; output: string }> {
  const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], { input: '', timeoutMs: 20_000 })
  const output = r.stdout + r.stderr
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0]
  if (pem === undefined) throw new Error(`openssl s_client printed no certificate: ${output}`)
  return { fingerprint: new X509Certificate(pem).fingerprint256, alpn: /ALPN protocol: (\S+)/.exec(output)?.[1], output }
}

const PG_SSL_REQUEST = Buffer.from('0000000804d2162f', 'hex')

/** libpq's way: SSLRequest, the proxy's `S`, then TLS over the same socket. */
async function pgTls(servername: string | undefined): Promise<TLSSocket> {
  const raw = netConnect({ host: '127.0.0.1', port: h.port(5432) })
  const timer = setTimeout(() => raw.destroy(new Error('no S in 10 s')), 10_000)
  try {
    await once(raw, 'connect')
    raw.write(PG_SSL_REQUEST)
    const [answer] = await once(raw, 'data') as [Buffer]
    expect(answer.toString()).toBe('S')
  } finally {
    clearTimeout(timer)
  }
  return nodeTls(0, { servername, socket: raw })
}

describe('the https port serves the certificate of the SNI name, whatever its key type', () => {
  test('node:tls, HTTP/1.1 and h2 ALPN: RSA host, EC host, app host without a certificate, no SNI', async () => {
    const port = h.port(443)
    const bare: string[] = []
    const fallback: string[] = []
    for (const alpn of [['http/1.1'], ['h2', 'http/1.1']]) {
      for (const host of [RSA_HOST, EC_HOST]) {
        const socket = await nodeTls(port, { servername: host, ALPNProtocols: alpn })
        expect(served(socket)).toMatchObject({ fingerprint: fingerprint[host], cn: host, alpn: alpn[0], keyType: host === RSA_HOST ? 'rsa' : 'ec' })
        await close(socket)
      }
      const b = await nodeTls(port, { servername: BARE_HOST, ALPNProtocols: alpn })
      const forBare = served(b)
      expect(forBare).toMatchObject({ cn: BARE_HOST, alt: `DNS:${BARE_HOST}`, alpn: alpn[0] })
      bare.push(forBare.fingerprint)
      await close(b)
      const none = await nodeTls(port, { ALPNProtocols: alpn })
      const forNone = served(none)
      expect(forNone).toMatchObject({ cn: 'edgeproxy.invalid', alpn: alpn[0] })
      fallback.push(forNone.fingerprint)
      await close(none)
    }
    // one self-signed certificate per host name, made once; the fallback is another one
    expect(new Set(bare).size).toBe(1)
    expect(new Set(fallback).size).toBe(1)
    expect([...Object.values(fingerprint), fallback[0]]).not.toContain(bare[0])
  })

  test('a client that trusts only the added RSA certificate verifies it and reaches the app (HTTP/1.1)', async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port: h.port(443), servername: RSA_HOST, ca: pemOf[RSA_HOST], ALPNProtocols: ['http/1.1'] })
    const timer = setTimeout(() => socket.destroy(new Error('TLS handshake did not finish in 10 s')), 10_000)
    await once(socket, 'secureConnect').finally(() => clearTimeout(timer))
    expect(socket.authorized).toBe(true)
    const r = await http1(socket, RSA_HOST, '/rsa')
    expect(r.status).toBe('HTTP/1.1 200 OK')
    expect(r.body.url).toBe('/rsa')
    expect(r.body.headers['x-forwarded-proto']).toBe('https')
  })

  test('routing after the handshake still sees the SNI name: HTTP/1.1 and h2 requests reach the app', async () => {
    const port = h.port(443)
    for (const host of [RSA_HOST, EC_HOST, BARE_HOST]) {
      const r = await http1(await nodeTls(port, { servername: host, ALPNProtocols: ['http/1.1'] }), host, `/h1/${host}`)
      expect(r.status).toBe('HTTP/1.1 200 OK')
      expect(r.body.url).toBe(`/h1/${host}`)
      const r2 = await h2(port, host, host, `/h2/${host}`)
      expect(r2).toMatchObject({ status: 200, url: `/h2/${host}`, alpn: 'h2', cn: host })
      if (host !== BARE_HOST) expect(r2.fingerprint).toBe(fingerprint[host])
    }
    const none = await h2(port, undefined, RSA_HOST, '/h2/nosni')
    expect(none).toMatchObject({ status: 200, url: '/h2/nosni', cn: 'edgeproxy.invalid' })
  })

  test('openssl s_client -servername, with ALPN h2 and http/1.1', async () => {
    const port = h.port(443)
    for (const alpn of ['h2', 'http/1.1']) {
      for (const host of [RSA_HOST, EC_HOST]) {
        const r = await sClient(port, ['-servername', host, '-alpn', alpn])
        expect(r.fingerprint, r.output).toBe(fingerprint[host])
        expect(r.alpn).toBe(alpn)
      }
      const bare = await sClient(port, ['-servername', BARE_HOST, '-alpn', alpn])
      expect(bare.output).toMatch(new RegExp(`subject=CN\\s*=\\s*${BARE_HOST.replace(/\./g, '\\.')}`))
      const none = await sClient(port, ['-noservername', '-alpn', alpn])
      expect(none.output).toMatch(/subject=CN\s*=\s*edgeproxy\.invalid/)
    }
    // TLS 1.2 with RSA: the ECDHE-RSA suites of the floor are there for it
    const r12 = await sClient(port, ['-servername', RSA_HOST, '-tls1_2'])
    expect(r12.fingerprint).toBe(fingerprint[RSA_HOST])
    expect(r12.output).toMatch(/Cipher\s*(is|:)\s*ECDHE-RSA-/)
  })
})

describe('the pg_tls port does the same', () => {
  test('SSLRequest then TLS (node:tls): the RSA certificate for the SNI name, the fallback without SNI', async () => {
    const named = await pgTls(DB_HOST)
    expect(served(named)).toMatchObject({ fingerprint: fingerprint[DB_HOST], keyType: 'rsa' })
    // the stream reached the Machine (an echo) after the handshake
    named.write('ping')
    const [echo] = await once(named, 'data') as [Buffer]
    expect(echo.toString()).toBe('ping')
    named.destroy() // the echo proves the proxy finished its handshake
    const none = await pgTls(undefined)
    expect(served(none).cn).toBe('edgeproxy.invalid')
    await close(none)
  })

  test('direct TLS (no SSLRequest, ALPN postgresql)', async () => {
    const socket = await nodeTls(h.port(5432), { servername: DB_HOST, ALPNProtocols: ['postgresql'] })
    expect(served(socket)).toMatchObject({ fingerprint: fingerprint[DB_HOST], keyType: 'rsa', alpn: 'postgresql' })
    socket.write('pong')
    const [echo] = await once(socket, 'data') as [Buffer]
    expect(echo.toString()).toBe('pong')
    socket.destroy()
  })

  test('openssl s_client -starttls postgres -servername', async () => {
    const r = await sClient(h.port(5432), ['-starttls', 'postgres', '-servername', DB_HOST])
    expect(r.fingerprint, r.output).toBe(fingerprint[DB_HOST])
  })
})

// ---- the ClientHello as the network delivers it ----

/** A transport that sends the client's first write (its ClientHello) as `split` says, with pauses between. */
function slicingTransport(port: number, split: (hello: Buffer) => Buffer[]): Duplex {
  const raw: Socket = netConnect({ host: '127.0.0.1', port })
  raw.setNoDelay(true)
  let first = true
  const transport = new Duplex({
    read() { raw.resume() },
    write(chunk: Buffer, _enc, cb) {
      if (!first) { raw.write(chunk, cb); return }
      first = false
      const pieces = split(chunk)
      const next = (): void => {
        const piece = pieces.shift()
        if (piece === undefined) { cb(); return }
        raw.write(piece)
        setTimeout(next, 30)
      }
      next()
    },
    final(cb) { raw.end(); cb() },
    destroy(err, cb) { raw.destroy(); cb(err) },
  })
  raw.on('data', (c: Buffer) => { if (!transport.push(c)) raw.pause() })
  raw.on('end', () => transport.push(null))
  raw.on('error', (err) => transport.destroy(err))
  return transport
}


const cutAt = (b: Buffer, ...at: number[]): Buffer[] => [0, ...at].map((from, i) => b.subarray(from, i < at.length ? at[i] : b.length))

describe('a ClientHello in pieces', () => {
  const cases: Array<[string, (hello: Buffer) => Buffer[]]> = [
    ['its first byte alone, then the rest', (b) => cutAt(b, 1)],
    ['the record header, then the rest', (b) => cutAt(b, 5)],
    ['cut inside the server name, then all but the last byte, then that byte', (b) => cutAt(b, b.indexOf(RSA_HOST) + 4, b.length - 1)],
    ['eight TCP segments', (b) => cutAt(b, ...[1, 2, 3, 4, 5, 6, 7].map((i) => Math.floor((b.length * i) / 8)))],
    ['re-cut into TLS records of 64 bytes, sent in one write', (b) => [refragment(b, 64)]],
    ['re-cut into TLS records of 3 bytes, sent in three pieces', (b) => { const r = refragment(b, 3); return cutAt(r, 40, Math.floor(r.length / 2)) }],
  ]
  for (const [name, split] of cases) {
    test(`${name}: the RSA certificate, HTTP works`, async () => {
      const port = h.port(443)
      const before = h.proxy.stats.tlsHandshakes
      const socket = await nodeTls(port, { servername: RSA_HOST, ALPNProtocols: ['http/1.1'], socket: slicingTransport(port, split) })
      expect(served(socket)).toMatchObject({ fingerprint: fingerprint[RSA_HOST], alpn: 'http/1.1' })
      expect((await http1(socket, RSA_HOST, '/pieces')).status).toBe('HTTP/1.1 200 OK')
      expect(h.proxy.stats.tlsHandshakes - before).toBe(1)
    })
  }
})

describe('what is not a ClientHello is counted as a failed handshake and closed', () => {
  /** Sends `bytes` (after the SSLRequest and its `S` with `pg`), then waits for the proxy to close. */
  async function refused(bytes: Buffer, opts: { pg?: boolean } = {}): Promise<{ answer: Buffer; ms: number; failures: number }> {
    const before = h.proxy.stats.tlsHandshakeFailures
    const raw = netConnect({ host: '127.0.0.1', port: h.port(opts.pg === true ? 5432 : 443) })
    const timer = setTimeout(() => raw.destroy(new Error('the proxy did not close in 15 s')), 15_000)
    raw.on('error', () => {})
    const closed = once(raw, 'close')
    await once(raw, 'connect')
    if (opts.pg === true) {
      raw.write(PG_SSL_REQUEST)
      const [s] = await once(raw, 'data') as [Buffer]
      expect(s.toString()).toBe('S')
    }
    const chunks: Buffer[] = []
    raw.on('data', (c: Buffer) => chunks.push(c))
    const start = Date.now()
    if (bytes.length > 0) raw.write(bytes)
    await closed
    clearTimeout(timer)
    return { answer: Buffer.concat(chunks), ms: Date.now() - start, failures: h.proxy.stats.tlsHandshakeFailures - before }
  }

  test('plain HTTP, an SSLv2-style hello, a malformed server_name: closed at once, nothing sent back', async () => {
    for (const bytes of [
      Buffer.from(`GET / HTTP/1.1\r\nHost: ${RSA_HOST}\r\n\r\n`),
      Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, ...Buffer.alloc(37)]),
      malformedSni(),
    ]) {
      const r = await refused(bytes)
      expect(r.answer.length).toBe(0)
      expect(r.failures).toBe(1)
      expect(r.ms).toBeLessThan(HANDSHAKE_MS) // refused on sight, not by the timeout
    }
  })

  test('a hello that stops half way is closed by the handshake timeout', async () => {
    const r = await refused(malformedSni().subarray(0, 30))
    expect(r.answer.length).toBe(0)
    expect(r.failures).toBe(1)
    expect(r.ms).toBeGreaterThanOrEqual(HANDSHAKE_MS - 200)
  })

  test('on the pg_tls port too, after the SSLRequest: refused on sight, or by the timeout', async () => {
    const bad = await refused(Buffer.from('GET / HTTP/1.1\r\n\r\n'), { pg: true })
    expect(bad).toMatchObject({ answer: Buffer.alloc(0), failures: 1 })
    expect(bad.ms).toBeLessThan(HANDSHAKE_MS)
    const silent = await refused(Buffer.alloc(0), { pg: true })
    expect(silent).toMatchObject({ answer: Buffer.alloc(0), failures: 1 })
    expect(silent.ms).toBeGreaterThanOrEqual(HANDSHAKE_MS - 200)
  })
})

/** A TLS 1.2 ClientHello whose server_name holds a NUL byte. */
function malformedSni(): Buffer {
  const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff])
  const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b])
  const host = Buffer.from('a\0b.example.test', 'latin1')
  const sni = Buffer.concat([u16(0), vec16(vec16(Buffer.concat([Buffer.from([0]), vec16(host)])))])
  const body = Buffer.concat([u16(0x0303), Buffer.alloc(32, 9), Buffer.from([0]), vec16(u16(0xc02b)), Buffer.from([1, 0]), vec16(sni)])
  const message = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body])
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(message.length), message])
}
