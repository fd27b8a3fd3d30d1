import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { BACKHAUL_ALPN } from '../../schemas/backhaul.js'
import { runCli } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait-for.js'
import { DaemonFleet, logRecord } from './helpers/daemon-fleet.js'

/**
 * Issue 11 item 11: the PROXY protocol on the Machine-facing side, checked by real receivers run as Machines
 * by a worker's supervisor: HAProxy (`accept-proxy`, a strict v2 parser that echoes the address it
 * accepted) and b-proxy-recorder.mjs (a receiver to the letter of the spec: a v1 line within 107 bytes).
 * (a) every header edgeproxy writes — v1 and v2, from the edge itself and from a worker at the end of the
 *     backhaul — is accepted and carries the real client address and the address it dialled;
 * (b) the receivers really are strict: over-long v1 and malformed v2 headers sent straight to them are
 *     dropped without an answer, so (a) proves edgeproxy stays inside those limits;
 * (c) a client that sends its own PROXY header first cannot choose its address: the Machine reads
 *     edgeproxy's header, and the client's one only as payload;
 * (d) a fleet member sending malformed client info in a backhaul OPEN gets it refused, and odd-but-valid
 *     addresses still make a header within the spec's limits.
 */
const RECORDER = join(import.meta.dirname, 'helpers', 'b-proxy-recorder.mjs')
const fleet = new DaemonFleet()
let haproxy: MachineRecord
let recorder: MachineRecord
let recorderLog = ''
const ports = { direct: { v1: 0, v2: 0, recV1: 0, recV2: 0 }, backhaul: { v1: 0, v2: 0, recV1: 0, recV2: 0 } }

const HAPROXY_CFG = `global
  maxconn 500
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
  timeout http-request 5s
frontend pp
  bind "\${FLY_PRIVATE_IP}:7000" accept-proxy
  bind "\${FLY_PRIVATE_IP}:7001" accept-proxy
  http-request return status 200 content-type text/plain lf-string "src=%[src]:%[src_port] dst=%[dst]:%[dst_port]\\n"
`

beforeAll(async () => {
  await fleet.init()
  // ams-1 only accepts traffic; iad-1 also runs the Machines: ams-1's clients cross the backhaul
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge', extra: ['--no-fsync'] })
  await fleet.start({ name: 'iad-1', region: 'iad', roles: 'edge,worker', extra: ['--no-fsync'] })
  await fleet.waitAllUp()
  const cfg = join(fleet.dir.path, 'haproxy.cfg')
  await writeFile(cfg, HAPROXY_CFG)
  recorderLog = join(fleet.dir.path, 'recorder.ndjson')
  await writeFile(recorderLog, '')
  const svc = (internal: number, pub: number, version: string): string =>
    `[[services]]\ninternal_port = ${internal}\n[[services.ports]]\nport = ${pub}\nhandlers = ["proxy_proto"]\nproxy_proto_options = { version = "${version}" }\n`
  await fleet.deploy('iad-1', `app = "pp"\n${svc(7000, 7000, 'v1')}${svc(7001, 7001, 'v2')}`)
  await fleet.deploy('iad-1', `app = "rec"\n${svc(7000, 5432, 'v1')}${svc(7001, 443, 'v2')}`)
  const h = await fleet.machine('iad-1', 'pp', { node: 'iad-1', cmd: ['/usr/sbin/haproxy', '-db', '-f', cfg] })
  const r = await fleet.machine('iad-1', 'rec', { node: 'iad-1', cmd: [process.execPath, RECORDER, recorderLog, '7000', '7001'] })
  haproxy = await fleet.waitMachine('ams-1', h.id, (m) => m.state === 'started' && m.ready, 'HAProxy ready', 60_000)
  recorder = await fleet.waitMachine('ams-1', r.id, (m) => m.state === 'started' && m.ready, 'recorder ready', 60_000)
  for (const [via, node] of [['direct', 'iad-1'], ['backhaul', 'ams-1']] as const) {
    ports[via] = {
      v1: await fleet.publicPort(node, 7000), v2: await fleet.publicPort(node, 7001),
      recV1: await fleet.publicPort(node, 5432), recV2: await fleet.publicPort(node, 443),
    }
  }
}, 180_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

/** Sends `bytes` from `from` (a 127/8 address of our choosing) and reads until the server closes. */
async function exchange(port: number, bytes: Buffer | string, from = '127.0.0.1', host = '127.0.0.1'): Promise<{ text: string; local: { ip: string; port: number }; timedOut: boolean }> {
  const socket = connect({ host, port, localAddress: from })
  await once(socket, 'connect')
  const local = { ip: socket.localAddress!, port: socket.localPort! }
  let text = ''
  socket.on('data', (c: Buffer) => { text += c.toString('latin1') })
  socket.on('error', () => { /* a reset is an answer too: the text so far */ })
  const closed = new Promise((resolve) => socket.once('close', resolve)) // events.once would reject on a reset
  socket.write(bytes)
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; socket.destroy() }, 10_000)
  await closed
  clearTimeout(timer)
  return { text, local, timedOut }
}

const GET = 'GET / HTTP/1.1\r\nHost: pp\r\nConnection: close\r\n\r\n'

async function recorderEntries(): Promise<Array<Record<string, unknown>>> {
  return (await readFile(recorderLog, 'utf8')).trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
}

describe('(a) every header edgeproxy writes is accepted by HAProxy and names the real client', () => {
  for (const via of ['direct', 'backhaul'] as const) {
    for (const version of ['v1', 'v2'] as const) {
      test(`${version}, ${via === 'direct' ? 'written by the edge that hosts the Machine' : 'written by the worker at the end of the backhaul'}`, async () => {
        const seen: string[] = []
        const expected: string[] = []
        // clients from many addresses of 127/8, the longest dotted forms included
        for (const from of ['127.0.0.1', '127.12.34.56', '127.255.255.254', '127.200.100.250', '127.1.2.3']) {
          const { text, local } = await exchange(ports[via][version], GET, from)
          expect(text).toMatch(/^HTTP\/1\.1 200 /)
          seen.push(/src=(\S+)/.exec(text)?.[1] ?? text)
          expected.push(`${local.ip}:${local.port}`)
          expect(text).toContain(`dst=127.0.0.1:${ports[via][version]}\n`) // the address and port the client dialled
        }
        expect(seen).toEqual(expected)
      })
    }
  }
})

describe('(a) the header bytes, as a spec-strict receiver reads them', () => {
  for (const via of ['direct', 'backhaul'] as const) {
    test(`${via}: v1 is one line of at most 107 bytes, v2 is 28 bytes for TCP over IPv4; both exact`, async () => {
      const v1 = await exchange(ports[via].recV1, 'hello v1\n', '127.255.255.254')
      const e1 = JSON.parse(v1.text) as { version: number; headerLength: number; headerHex: string; src: string; srcPort: number; dst: string; dstPort: number; payload: string }
      const line = `PROXY TCP4 127.255.255.254 127.0.0.1 ${v1.local.port} ${ports[via].recV1}\r\n`
      expect(Buffer.from(e1.headerHex, 'hex').toString('latin1')).toBe(line)
      expect(e1.headerLength).toBeLessThanOrEqual(107)
      expect(e1.payload).toBe('hello v1\n')

      const v2 = await exchange(ports[via].recV2, 'hello v2\n', '127.200.100.250')
      const e2 = JSON.parse(v2.text) as typeof e1
      expect(e2).toMatchObject({ version: 2, headerLength: 28, src: '127.200.100.250', srcPort: v2.local.port, dst: '127.0.0.1', dstPort: ports[via].recV2, payload: 'hello v2\n' })
      expect(e2.headerHex.slice(0, 32)).toBe('0d0a0d0a000d0a515549540a2111000c') // signature, v2 PROXY, TCP4, 12 bytes
    })
  }
})

// ---- (b) the receivers are strict ----

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')
const ADDR4 = Buffer.from([6, 6, 6, 6, 127, 0, 0, 1, 0x1a, 0x0a, 0x1b, 0x58])
const v2 = (verCmd: number, fam: number, len: number, addr: Buffer, sig = SIG): Buffer => Buffer.concat([sig, Buffer.from([verCmd, fam, len >> 8, len & 0xff]), addr])
const badSig = Buffer.from(SIG)
badSig[11] = 0x0b
const LONG_V1 = 'PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n'

describe('(b) malformed headers sent straight to the Machine-side receivers are dropped without an answer', () => {
  const malformedV2: Array<[string, Buffer]> = [
    ['a bad signature', v2(0x21, 0x11, 12, ADDR4, badSig)],
    ['version nibble 1', v2(0x11, 0x11, 12, ADDR4)],
    ['version nibble 3', v2(0x31, 0x11, 12, ADDR4)],
    ['an unknown command', v2(0x2f, 0x11, 12, ADDR4)],
    ['a length shorter than its addresses', v2(0x21, 0x11, 4, ADDR4.subarray(0, 4))],
    ['a length far beyond the data', v2(0x21, 0x11, 0xffff, ADDR4)],
    ['an unknown address family', v2(0x21, 0x41, 12, ADDR4)],
    ['an unknown transport', v2(0x21, 0x13, 12, ADDR4)],
    ['a v1 line with padding past 107 bytes', Buffer.from(`PROXY TCP4 6.6.6.6 127.0.0.1 6666 7000${' '.repeat(80)}\r\n`)],
    ['a v1 line never ended', Buffer.from(`PROXY TCP4 6.6.6.6 127.0.0.1 6666 7000${'x'.repeat(200)}`)],
  ]
  test.each(malformedV2)('HAProxy: %s', async (_name, header) => {
    const control = await exchange(7000, Buffer.concat([v2(0x21, 0x11, 12, ADDR4), Buffer.from(GET)]), '127.0.0.1', haproxy.privateAddr)
    expect(control.text).toContain('src=6.6.6.6:6666') // the receiver does take a well-formed header from us
    const r = await exchange(7000, Buffer.concat([header, Buffer.from(GET)]), '127.0.0.1', haproxy.privateAddr)
    expect(r).toMatchObject({ text: '', timedOut: false }) // closed by the receiver, not by our 10 s patience
  })

  test('the spec-strict recorder: a well-formed v1 line of 116 bytes (over 107) is dropped, 104 bytes is read', async () => {
    expect(LONG_V1.length).toBe(116)
    const before = (await recorderEntries()).length
    const long = await exchange(7000, `${LONG_V1}hello\n`, '127.0.0.1', recorder.privateAddr)
    expect(long).toMatchObject({ text: '', timedOut: false })
    const max = 'PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n'
    expect(max.length).toBe(104) // the longest canonical v1 line there is
    const ok = await exchange(7000, `${max}hello\n`, '127.0.0.1', recorder.privateAddr)
    expect(JSON.parse(ok.text)).toMatchObject({ version: 1, headerLength: 104, srcPort: 65535 })
    const entries = (await recorderEntries()).slice(before)
    expect(entries[0]).toMatchObject({ error: 'v1 line not ended within 107 bytes' })
  })
})

// ---- (c) spoofing ----

describe('(c) a client sending its own PROXY header first cannot choose its address', () => {
  const spoofV1 = 'PROXY TCP4 6.6.6.6 127.0.0.1 6666 7000\r\n'
  const spoofV2 = v2(0x21, 0x11, 12, ADDR4)
  for (const via of ['direct', 'backhaul'] as const) {
    test(`${via}: the Machine reads edgeproxy's header with the real address, the spoof only as payload`, async () => {
      for (const [port, spoof] of [[ports[via].recV1, Buffer.from(spoofV1)], [ports[via].recV2, spoofV2], [ports[via].recV1, spoofV2], [ports[via].recV2, Buffer.from(spoofV1)]] as const) {
        const { text, local } = await exchange(port, Buffer.concat([spoof, Buffer.from('tail\n')]), '127.3.4.5')
        const e = JSON.parse(text) as { src: string; srcPort: number; payload: string }
        expect({ src: e.src, srcPort: e.srcPort }).toEqual({ src: '127.3.4.5', srcPort: local.port })
        // everything up to the first newline the client sent, byte for byte, after the real header
        const sent = Buffer.concat([spoof, Buffer.from('tail\n')]).toString('latin1')
        expect(e.payload).toBe(sent.slice(0, sent.indexOf('\n') + 1))
      }
      // HAProxy behind: the real header is taken, the spoofed one is garbage in the HTTP stream (400)
      for (const [port, spoof] of [[ports[via].v1, Buffer.from(spoofV1)], [ports[via].v2, spoofV2]] as const) {
        const r = await exchange(port, Buffer.concat([spoof, Buffer.from(GET)]), '127.3.4.5')
        expect(r.text).toMatch(/^HTTP\/1\.[01] 400 /)
        expect(r.text).not.toContain('6.6.6.6')
      }
    })
  }
})

// ---- (d) the backhaul preamble ----

interface Frame { type: number; id: number; payload: Buffer }

/** A fleet member of our own (a certificate from the fleet CA) speaking raw backhaul frames to iad-1. */
async function rogueMember(): Promise<{ send(open: unknown, id: number): Promise<Frame>; data(id: number, bytes: Buffer): void; close(): void }> {
  const out = join(fleet.dir.path, 'rogue')
  const r = await runCli(['fleet', 'node-cert', '--name', 'rogue-1', '--fleet', fleet.fleetDir, '--out', out])
  expect(r.code).toBe(0)
  const [cert, key, ca] = await Promise.all([readFile(join(out, 'rogue-1.crt'), 'utf8'), readFile(join(out, 'rogue-1.key'), 'utf8'), readFile(join(fleet.fleetDir, 'ca.crt'), 'utf8')])
  const listen = String(logRecord(fleet.node('iad-1').daemon.logs(), 'backhaul ready').listen)
  const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))]
  const socket = tlsConnect({ host, port, cert, key, ca, servername: 'iad-1', ALPNProtocols: [BACKHAUL_ALPN] })
  await once(socket, 'secureConnect')
  let buf = Buffer.alloc(0)
  const waiting = new Map<number, (f: Frame) => void>()
  socket.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c])
    while (buf.length >= 9 && buf.length >= 9 + buf.readUInt32BE(5)) {
      const f = { type: buf[0], id: buf.readUInt32BE(1), payload: buf.subarray(9, 9 + buf.readUInt32BE(5)) }
      buf = buf.subarray(9 + f.payload.length)
      waiting.get(f.id)?.(f)
    }
  })
  return {
    send(open, id) {
      const payload = Buffer.from(JSON.stringify(open))
      const head = Buffer.alloc(9)
      head[0] = 1 // OPEN
      head.writeUInt32BE(id, 1)
      head.writeUInt32BE(payload.length, 5)
      socket.write(Buffer.concat([head, payload]))
      return new Promise<Frame>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to OPEN ${id} in 10 s`)), 10_000)
        waiting.set(id, (f) => { clearTimeout(timer); resolve(f) })
      })
    },
    data(id, bytes) {
      const head = Buffer.alloc(9)
      head[0] = 4 // DATA
      head.writeUInt32BE(id, 1)
      head.writeUInt32BE(bytes.length, 5)
      socket.write(Buffer.concat([head, bytes]))
    },
    close: () => socket.destroy(),
  }
}

test('(d) malformed client info in a backhaul OPEN is refused before any connection to the Machine', async () => {
  const rogue = await rogueMember()
  try {
    const base = { v: 1, machine: recorder.id, port: 7000, edge: { node: 'rogue-1', region: 'ams' }, proxyProto: 'v1' }
    const client = { ip: '203.0.113.7', port: 40000, localAddress: '127.0.0.1', localPort: 5432, tls: false }
    const bad: Array<[string, unknown]> = [
      ['a CRLF and a second PROXY line in the address', { ...base, client: { ...client, ip: '6.6.6.6\r\nPROXY TCP4 1.1.1.1' } }],
      ['a host name for an address', { ...base, client: { ...client, ip: 'evil.example' } }],
      ['a port beyond 65535', { ...base, client: { ...client, port: 70000 } }],
      ['a negative destination port', { ...base, client: { ...client, localPort: -1 } }],
      ['a 200-character address', { ...base, client: { ...client, ip: `1.2.3.4${' '.repeat(193)}` } }],
      ['proxyProto without a client', { ...base }],
      ['an unknown PROXY version', { ...base, client, proxyProto: 'v3' }],
      ['an unknown client field', { ...base, client: { ...client, spoof: '6.6.6.6' } }],
    ]
    const before = (await recorderEntries()).length
    let id = 1
    for (const [name, open] of bad) {
      const f = await rogue.send(open, id)
      expect({ name, type: f.type, id: f.id }).toEqual({ name, type: 3, id }) // OPEN_FAIL for that stream
      expect(JSON.parse(f.payload.toString()) as { code: string }, name).toMatchObject({ code: 'EP_BAD_REQUEST' })
      id += 2
    }
    // nothing reached the Machine (a connection would be logged, header or no header)
    await new Promise((r) => setTimeout(r, 500))
    expect((await recorderEntries()).slice(before)).toEqual([])
  } finally {
    rogue.close()
  }
})

test('(d) valid but unusual client addresses in an OPEN still make a v1 header a strict receiver reads (≤ 107 bytes)', async () => {
  const rogue = await rogueMember()
  try {
    const odd: Array<[string, Record<string, unknown>]> = [
      ['uncompressed IPv6 with an IPv4 tail, on both ends', { ip: '0000:0000:0000:0000:0000:ffff:255.255.255.255', port: 65535, localAddress: 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255', localPort: 65535 }],
      ['an IPv6 zone id', { ip: `fe80::1%${'z'.repeat(50)}`, port: 65535, localAddress: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', localPort: 65535 }],
    ]
    let id = 1
    for (const [name, c] of odd) {
      const before = (await recorderEntries()).length
      const f = await rogue.send({ v: 1, machine: recorder.id, port: 7000, edge: { node: 'rogue-1', region: 'ams' }, proxyProto: 'v1', client: { ...c, tls: false } }, id)
      if (f.type === 3) {
        // refusing it is fine too — as long as nothing malformed reaches the Machine
        expect(JSON.parse(f.payload.toString()) as unknown, name).toMatchObject({ code: 'EP_BAD_REQUEST' })
        id += 2
        continue
      }
      expect(f.type, name).toBe(2) // OPEN_OK: the worker connected and wrote the header; now some payload
      rogue.data(id, Buffer.from('hi\n'))
      const entry = await waitFor(async () => (await recorderEntries()).slice(before).find((e) => e.port === 7000),
        { timeoutMs: 10_000, what: `the recorder's verdict on ${name}` })
      expect(entry.error, name).toBeUndefined()
      expect(entry.headerLength as number, name).toBeLessThanOrEqual(107)
      expect(entry.payload, name).toBe('hi\n')
      id += 2
    }
  } finally {
    rogue.close()
  }
})
