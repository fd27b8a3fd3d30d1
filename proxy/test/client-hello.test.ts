import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type HelloScan, MAX_HELLO_BYTES, scanClientHello } from '../tls/client-hello.js'
import { refragment } from './tls-records.js'

/**
 * The ClientHello scanner (tls/client-hello.ts) on hellos captured from real clients — node:tls and
 * `openssl s_client` connecting to a raw TCP server on 127.0.0.1 — and on malformed ones built byte by byte.
 */

const server = createServer()
let port = 0
const waiting: Array<(bytes: Buffer) => void> = []

beforeAll(async () => {
  server.on('connection', (socket: Socket) => {
    let buf = Buffer.alloc(0)
    const taker = waiting.shift()
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      // every client here sends its hello in one record: done when that record is whole
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        socket.destroy()
        taker?.(buf.subarray(0, 5 + buf.readUInt16BE(3)))
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  port = (server.address() as { port: number }).port
})

afterAll(async () => {
  server.close()
  await once(server, 'close')
})

function nextHello(timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ClientHello captured in ${timeoutMs} ms`)), timeoutMs)
    waiting.push((b) => { clearTimeout(timer); resolve(b) })
  })
}

async function nodeHello(opts: ConnectionOptions): Promise<Buffer> {
  const hello = nextHello()
  const client = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts })
  client.on('error', () => {})
  try {
    return await hello
  } finally {
    client.destroy()
  }
}

async function opensslHello(args: string[]): Promise<Buffer> {
  const hello = nextHello()
  const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], { stdio: ['pipe', 'ignore', 'ignore'] })
  const exited = once(child, 'exit')
  try {
    return await hello
  } finally {
    child.kill()
    await exited
  }
}

const scanned = (buf: Buffer): HelloScan => scanClientHello(buf)
const nameOf = (buf: Buffer): string | undefined => {
  const r = scanned(buf)
  if (r.kind !== 'hello') throw new Error(`expected a complete hello, got ${JSON.stringify(r)}`)
  return r.servername
}

/** Every proper prefix is 'partial' (never invalid, never a throw), and the two halves joined give the name. */
function expectEverySplit(hello: Buffer, name: string | undefined): void {
  for (let i = 1; i < hello.length; i++) {
    const first = Buffer.from(hello.subarray(0, i))
    const second = Buffer.from(hello.subarray(i))
    const r = scanned(first)
    expect(r.kind, `split at ${i}`).toBe('partial')
    // the reader waits for `need` bytes before scanning again: it never asks for more than the hello
    if (r.kind === 'partial') expect(r.need).toBeGreaterThan(i)
    if (r.kind === 'partial') expect(r.need).toBeLessThanOrEqual(hello.length)
    expect(scanned(Buffer.concat([first, second])), `split at ${i}`).toEqual({ kind: 'hello', servername: name })
  }
}


describe('hellos from real clients', () => {
  const cases: Array<[string, () => Promise<Buffer>, string | undefined]> = [
    ['node:tls, TLS 1.3, SNI', () => nodeHello({ servername: 'alpha.example.test', ALPNProtocols: ['h2', 'http/1.1'] }), 'alpha.example.test'],
    ['node:tls, TLS 1.2 only, SNI', () => nodeHello({ servername: 'beta.example.test', maxVersion: 'TLSv1.2' }), 'beta.example.test'],
    ['node:tls to an IP address (no SNI)', () => nodeHello({}), undefined],
    ['node:tls, TLS 1.2 only, no SNI', () => nodeHello({ maxVersion: 'TLSv1.2' }), undefined],
    ['openssl s_client -servername', () => opensslHello(['-servername', 'Gamma.Example.Test']), 'Gamma.Example.Test'],
    ['openssl s_client -tls1_2 -servername', () => opensslHello(['-tls1_2', '-servername', 'db.example.test']), 'db.example.test'],
    ['openssl s_client -noservername', () => opensslHello(['-noservername']), undefined],
  ]
  for (const [name, capture, sni] of cases) {
    test(`${name}: the name, at every split into two chunks, and over several records`, async () => {
      const hello = await capture()
      expect(hello[0]).toBe(0x16)
      expect(nameOf(hello)).toBe(sni)
      expectEverySplit(hello, sni)
      // bytes after the hello (a client's next records) do not matter
      expect(nameOf(Buffer.concat([hello, Buffer.from([0x17, 3, 3, 0, 1, 0])]))).toBe(sni)
      for (const size of [1, 3, 4, 7, 100]) {
        const spanning = refragment(hello, size)
        expect(nameOf(spanning), `records of ${size} bytes`).toBe(sni)
        for (let i = 1; i < spanning.length; i += Math.max(1, Math.floor(spanning.length / 97))) {
          expect(scanned(spanning.subarray(0, i)).kind, `records of ${size}, cut at ${i}`).toBe('partial')
        }
        // the message complete, then a record of another type (early data) follows: still fine
        expect(nameOf(Buffer.concat([spanning, Buffer.from([0x17, 3, 3, 0, 1, 0])]))).toBe(sni)
      }
    })
  }

  test('mutated real hellos never make the scanner throw', async () => {
    const hellos = [await nodeHello({ servername: 'fuzz.example.test' }), await opensslHello(['-tls1_2', '-servername', 'fuzz.example.test'])]
    let invalid = 0
    for (const hello of hellos) {
      for (let round = 0; round < 3000; round++) {
        const mutated = Buffer.from(hello)
        const flips = 1 + (round % 4)
        for (let f = 0; f < flips; f++) mutated[randomBytes(2).readUInt16BE(0) % mutated.length] = randomBytes(1)[0]
        const cut = mutated.subarray(0, round % 2 === 0 ? mutated.length : randomBytes(2).readUInt16BE(0) % mutated.length)
        const r = scanned(cut)
        expect(['partial', 'hello', 'invalid']).toContain(r.kind)
        if (r.kind === 'invalid') invalid++
      }
    }
    expect(invalid).toBeGreaterThan(100) // the mutations did reach the checks
  })
})

// ---- malformed hellos, built field by field ----

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff])
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff])
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b])
const ext = (type: number, body: Buffer): Buffer => Buffer.concat([u16(type), vec16(body)])
const sniBody = (host: string | Buffer, nameType = 0): Buffer => {
  const h = typeof host === 'string' ? Buffer.from(host, 'latin1') : host
  return vec16(Buffer.concat([Buffer.from([nameType]), vec16(h)]))
}

interface Parts {
  version?: Buffer
  sessionId?: Buffer
  suites?: Buffer // with its length prefix
  compression?: Buffer // with its length prefix
  extensions?: Buffer | null // with its length prefix; null: none at all
}

function helloBody(p: Parts = {}): Buffer {
  const extensions = p.extensions === undefined
    ? vec16(Buffer.concat([ext(0, sniBody('built.example.test')), ext(0x000a, vec16(u16(0x001d)))]))
    : p.extensions
  return Buffer.concat([
    p.version ?? u16(0x0303), Buffer.alloc(32, 7),
    Buffer.from([(p.sessionId ?? Buffer.alloc(32, 1)).length]), p.sessionId ?? Buffer.alloc(32, 1),
    p.suites ?? vec16(Buffer.concat([u16(0x1301), u16(0xc02b)])),
    p.compression ?? Buffer.from([1, 0]),
    extensions ?? Buffer.alloc(0),
  ])
}

function record(message: Buffer, type = 0x16): Buffer {
  return Buffer.concat([Buffer.from([type, 3, 1]), u16(message.length), message])
}

function handshake(body: Buffer, type = 1, len = body.length): Buffer {
  return Buffer.concat([Buffer.from([type]), u24(len), body])
}

const built = (p: Parts = {}): Buffer => record(handshake(helloBody(p)))

function expectInvalid(buf: Buffer, reason: RegExp): void {
  const r = scanned(buf)
  expect(r.kind).toBe('invalid')
  expect(r.kind === 'invalid' ? r.reason : '').toMatch(reason)
}

describe('malformed first bytes get a clear rejection', () => {
  test('the well-formed built hello parses (the baseline for every mutation below)', () => {
    expect(scanned(built())).toEqual({ kind: 'hello', servername: 'built.example.test' })
    expect(scanned(built({ extensions: null }))).toEqual({ kind: 'hello', servername: undefined })
    expect(scanned(built({ extensions: vec16(Buffer.alloc(0)) }))).toEqual({ kind: 'hello', servername: undefined })
  })

  test('not TLS: plain HTTP, an application-data record, an alert, an SSLv2-style hello', () => {
    expectInvalid(Buffer.from('GET / HTTP/1.1\r\n'), /not a TLS handshake record/)
    expectInvalid(record(Buffer.from('hello'), 0x17), /not a TLS handshake record/)
    expectInvalid(Buffer.from([0x15, 3, 3, 0, 2, 2, 40]), /not a TLS handshake record/)
    // SSLv2 CLIENT-HELLO framing: 2-byte length with the high bit set, msg type 1, version 3.1
    expectInvalid(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]), /SSLv2-style/)
    // decided from the first byte: no waiting for more
    expectInvalid(Buffer.from([0x80]), /SSLv2-style/)
    expectInvalid(Buffer.from([0x47]), /not a TLS handshake record/)
  })

  test('record framing: bad version byte, empty record, record over 16 KiB, another record type inside the hello', () => {
    expectInvalid(Buffer.from([0x16, 2, 0]), /record version/)
    expectInvalid(Buffer.from([0x16, 3, 1, 0, 0]), /empty handshake record/)
    expectInvalid(Buffer.from([0x16, 3, 1, 0x40, 0x01]), /longer than 16 KiB/)
    // the handshake claims more than its record holds and the next record is application data
    const body = helloBody()
    const first = record(handshake(body).subarray(0, 50))
    expectInvalid(Buffer.concat([first, record(Buffer.from('x'), 0x17)]), /not a handshake record interrupts/)
    // …or a second handshake record with a bad header
    expectInvalid(Buffer.concat([first, Buffer.from([0x16, 9])]), /record version/)
  })

  test('handshake framing: not a ClientHello, longer than 16 KiB', () => {
    expectInvalid(record(handshake(helloBody(), 2)), /not a ClientHello/)
    expectInvalid(Buffer.from([0x16, 3, 1, 0, 4, 2]), /not a ClientHello/) // decided before the record is whole
    expectInvalid(Buffer.from([0x16, 3, 1, 0x40, 0, 1, 0x00, 0x50, 0x00]), /ClientHello longer than 16 KiB/)
    // the same claim made across records of 1 byte
    const oneByteRecords = Buffer.concat([0x01, 0x00, 0x50, 0x00].map((b) => record(Buffer.from([b]))))
    expectInvalid(oneByteRecords, /ClientHello longer than 16 KiB/)
  })

  test('a hello that never completes within the bound is refused, not waited for', () => {
    // a 16000-byte hello claimed, sent in 1-byte records: the headers eat the budget first
    const head = [0x01, 0x00, 0x3e, 0x80].map((b) => record(Buffer.from([b])))
    const filler: Buffer[] = []
    let size = head.reduce((n, b) => n + b.length, 0)
    while (size < MAX_HELLO_BYTES) { filler.push(record(Buffer.from([0]))); size += 6 }
    expectInvalid(Buffer.concat([...head, ...filler]), /no complete ClientHello in the first 16 KiB/)
    // a truthful but incomplete hello within the bound is just partial: the port's handshake timeout ends it
    expect(scanned(built().subarray(0, 60))).toEqual({ kind: 'partial', need: built().length })
  })

  test('truncated or overrunning lengths inside the hello', () => {
    expectInvalid(record(handshake(Buffer.from([3, 3, 1, 2, 3]))), /too short/)
    expectInvalid(built({ version: u16(0x0200) }), /version is not TLS/)
    expectInvalid(built({ sessionId: Buffer.alloc(33) }), /session id longer than 32/)
    expectInvalid(built({ suites: Buffer.concat([u16(3), Buffer.alloc(3)]) }), /cipher suites/)
    expectInvalid(built({ suites: u16(0) }), /cipher suites/)
    expectInvalid(built({ suites: Buffer.concat([u16(0xfffe), Buffer.alloc(4)]), compression: Buffer.alloc(0), extensions: null }), /truncated before its compression/)
    expectInvalid(built({ compression: Buffer.from([0]) }), /no compression method/)
    expectInvalid(built({ compression: Buffer.from([200, 0]), extensions: null }), /compression methods overrun/)
    expectInvalid(built({ extensions: Buffer.from([0]) }), /extensions length is truncated/)
    const exts = Buffer.concat([ext(0, sniBody('a.test')), ext(0x000a, vec16(u16(0x001d)))])
    expectInvalid(built({ extensions: Buffer.concat([u16(exts.length + 1), exts]) }), /extensions length does not match/)
    expectInvalid(built({ extensions: Buffer.concat([u16(exts.length - 1), exts]) }), /extensions length does not match/)
    expectInvalid(built({ extensions: vec16(Buffer.concat([exts, Buffer.from([0, 1])])) }), /extension header is truncated/)
    // an extension whose length runs past the end of the list
    expectInvalid(built({ extensions: vec16(Buffer.concat([exts, u16(0x0010), u16(40), Buffer.alloc(4)])) }), /extension overruns/)
  })

  test('server_name: malformed list, other name types, empty, too long, unprintable bytes, twice', () => {
    const withSni = (body: Buffer): Buffer => built({ extensions: vec16(ext(0, body)) })
    expectInvalid(withSni(Buffer.alloc(0)), /list length is malformed/)
    expectInvalid(withSni(u16(0)), /list is empty or truncated/)
    expectInvalid(withSni(Buffer.concat([u16(10), Buffer.from([0]), vec16(Buffer.from('a.test'))])), /list length is malformed/)
    expectInvalid(withSni(sniBody('a.test', 1)), /not a host_name/)
    expectInvalid(withSni(sniBody('')), /empty or longer than 255/)
    expectInvalid(withSni(sniBody('a'.repeat(256))), /empty or longer than 255/)
    expectInvalid(withSni(sniBody(Buffer.from('a\0b.test', 'latin1'))), /not printable ASCII/)
    expectInvalid(withSni(sniBody(Buffer.from('ä.test', 'utf8'))), /not printable ASCII/)
    expectInvalid(withSni(sniBody('a b.test')), /not printable ASCII/)
    // a second entry in the one list
    const two = vec16(Buffer.concat([Buffer.from([0]), vec16(Buffer.from('a.test')), Buffer.from([0]), vec16(Buffer.from('b.test'))]))
    expectInvalid(withSni(two), /length does not match the list/)
    expectInvalid(built({ extensions: vec16(Buffer.concat([ext(0, sniBody('a.test')), ext(0, sniBody('b.test'))])) }), /two server_name/)
    // 255 bytes is the limit, and the name comes back as sent
    expect(scanned(withSni(sniBody(`${'a'.repeat(250)}.test`)))).toEqual({ kind: 'hello', servername: `${'a'.repeat(250)}.test` })
    expect(scanned(withSni(sniBody('MiXeD.Example.TEST')))).toEqual({ kind: 'hello', servername: 'MiXeD.Example.TEST' })
  })

  test('every truncation of a malformed hello is partial or invalid, never a throw', () => {
    const samples = [
      built({ sessionId: Buffer.alloc(33) }),
      built({ extensions: vec16(Buffer.concat([u16(0), u16(40), Buffer.alloc(4)])) }),
      refragment(built({ suites: Buffer.concat([u16(0xfffe), Buffer.alloc(4)]), compression: Buffer.alloc(0), extensions: null }), 3),
    ]
    for (const s of samples) {
      for (let i = 0; i <= s.length; i++) expect(['partial', 'invalid']).toContain(scanned(s.subarray(0, i)).kind)
    }
  })
})
