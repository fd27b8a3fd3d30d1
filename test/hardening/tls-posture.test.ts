import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { request as httpsRequest } from 'node:https'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect as tlsConnect, type PeerCertificate } from 'node:tls'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { opensslCert } from '../helpers/certs.js'
import { runCli } from '../helpers/cli.js'
import { clientHello12, sendHello } from './helpers/b-tls-hello.js'
import { DaemonFleet, metric } from './helpers/daemon-fleet.js'

/**
 * Issue 11 item 10: the TLS posture of a real daemon's public ports, as a scanner and a client see it.
 * sslscan (the real tool) enumerates every protocol version and cipher suite the port accepts, for each
 * SNI name; we assert nothing below TLS 1.2, no cipher that is NULL, EXPORT, RC4, (3)DES, MD5-based,
 * anonymous or under 128 bits, no insecure renegotiation — on the https port and on the pg_tls port
 * (sslscan --starttls-psql). TLS compression is offered with a hand-built ClientHello (this sslscan has no
 * zlib). And each SNI name gets its own certificate: the exact one added with `edgeproxy certs add`
 * (fingerprint), a self-signed one for an app host without a certificate, the fallback for any other name.
 */
const MACHINE = join(import.meta.dirname, 'fixtures', 'hard-machine.mjs')
const ALPHA = 'alpha.example.test'
const BETA = 'beta.example.test'
const GAMMA = 'gamma.example.test' // an RSA certificate: what a user often brings, and what widens OpenSSL's suite choice
const BARE = 'bare.example.test' // the app answers to it, but no certificate was added for it
const fleet = new DaemonFleet()
const certs: Record<string, { certPem: string; certPath: string; keyPath: string }> = {}
let httpsPort = 0
let pgPort = 0

function deployApp(app: string, hostnames: string, toml: string): Promise<void> {
  return request(`${fleet.node('edge-1').api}/v1/apps/${app}?hostnames=${hostnames}`, {
    method: 'PUT', headers: { 'content-type': 'text/plain' }, body: toml,
  }).then(async (res) => {
    const text = await res.body.text()
    if (res.statusCode !== 201) throw new Error(`deploy ${app}: ${res.statusCode} ${text}`)
  })
}

beforeAll(async () => {
  await fleet.init()
  await fleet.start({ name: 'edge-1', region: 'ams', roles: 'edge,worker', extra: ['--no-fsync'] })
  await deployApp('web', [ALPHA, BETA, GAMMA, BARE].join(','), `app = "web"\n[http_service]\ninternal_port = 8080\n[[http_service.checks]]\npath = "/healthz"\ninterval = "1s"\ntimeout = "1s"\ngrace_period = "0s"\n`)
  await deployApp('db', 'db.example.test', `app = "db"\n[[services]]\ninternal_port = 5432\n[[services.ports]]\nport = 5432\nhandlers = ["pg_tls"]\n`)
  certs[GAMMA] = await rsaCert(fleet.dir.path, GAMMA)
  for (const host of [ALPHA, BETA, GAMMA]) {
    certs[host] ??= await opensslCert(fleet.dir.path, host)
    const r = await runCli(['--api', fleet.node('edge-1').api, 'certs', 'add', host, certs[host].certPath, certs[host].keyPath])
    expect(r.stderr).toBe('')
    expect(r.stdout).toContain(`certificate for ${host} added`)
  }
  const m = await fleet.machine('edge-1', 'web', { node: 'edge-1', cmd: [process.execPath, MACHINE] })
  await fleet.waitMachine('edge-1', m.id, (x) => x.state === 'started' && x.ready, 'started and ready')
  httpsPort = await fleet.publicPort('edge-1', 443)
  pgPort = await fleet.publicPort('edge-1', 5432)
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

/** A self-signed RSA 2048 certificate made by openssl (test/helpers/certs.ts makes P-256 ones). */
function rsaCert(dir: string, host: string): Promise<{ certPem: string; certPath: string; keyPath: string }> {
  const certPath = join(dir, `${host}.crt`)
  const keyPath = join(dir, `${host}.key`)
  return new Promise((resolve, reject) => {
    const child = execFile('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${host}`,
      '-addext', `subjectAltName=DNS:${host}`, '-keyout', keyPath, '-out', certPath], { timeout: 30_000 }, (err, _o, stderr) => {
      if (err !== null) { reject(new Error(`openssl: ${String(stderr)}`)); return }
      readFile(certPath, 'utf8').then((certPem) => resolve({ certPem, certPath, keyPath }), reject)
    })
    child.stdin?.destroy()
  })
}

// ---- sslscan ----

interface Scan {
  xml: string
  protocols: Map<string, boolean>
  ciphers: Array<{ version: string; bits: number; name: string; strength: string }>
  renegotiation: { supported: boolean; secure: boolean }
  subject: string
  altnames: string
}

function sslscan(args: string[]): Promise<Scan> {
  return new Promise((resolve, reject) => {
    const child = execFile('sslscan', ['--no-colour', '--xml=-', ...args], { timeout: 120_000, maxBuffer: 8 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) { reject(new Error(`sslscan ${args.join(' ')} failed: ${err.message} ${String(stderr)}`)); return }
      const xml = String(stdout)
      const attrs = (tag: string): Array<Record<string, string>> => [...xml.matchAll(new RegExp(`<${tag} ([^>]*)/>`, 'g'))]
        .map((m) => Object.fromEntries([...m[1].matchAll(/([a-z_-]+)="([^"]*)"/g)].map((a) => [a[1], a[2]])))
      const cdata = (tag: string): string => new RegExp(`<${tag}><!\\[CDATA\\[(.*?)\\]\\]></${tag}>`).exec(xml)?.[1] ?? ''
      const reneg = attrs('renegotiation')[0]
      resolve({
        xml,
        protocols: new Map(attrs('protocol').map((p) => [`${p.type}${p.version}`, p.enabled === '1'])),
        ciphers: attrs('cipher').map((c) => ({ version: c.sslversion, bits: Number(c.bits), name: c.cipher, strength: c.strength })),
        renegotiation: { supported: reneg?.supported === '1', secure: reneg?.secure === '1' },
        subject: cdata('subject'),
        altnames: cdata('altnames'),
      })
    })
    child.stdin?.destroy()
  })
}

/** What every public TLS port must show a scanner, whatever the name. */
function expectSoundPosture(scan: Scan): void {
  // the scan did reach a TLS server: without this, an empty answer would pass everything below
  expect(scan.protocols.size).toBe(6)
  expect(Object.fromEntries(scan.protocols)).toEqual({ ssl2: false, ssl3: false, 'tls1.0': false, 'tls1.1': false, 'tls1.2': true, 'tls1.3': true })
  expect(scan.ciphers.length).toBeGreaterThan(3)
  expect(new Set(scan.ciphers.map((c) => c.version))).toEqual(new Set(['TLSv1.2', 'TLSv1.3']))
  const weak = scan.ciphers.filter((c) => c.bits < 128
    || /NULL|EXP|RC4|DES|MD5|ADH|AECDH|anon|PSK|SRP/i.test(c.name)
    || !['strong', 'acceptable'].includes(c.strength))
  expect(weak).toEqual([])
  // TLS 1.2 suites all have forward secrecy (ECDHE, never static RSA) and an AEAD (no CBC, no CCM_8's
  // short tags); TLS 1.3 suites are AEAD by definition
  expect(scan.ciphers.filter((c) => c.version === 'TLSv1.2' && !/^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/.test(c.name))).toEqual([])
  // renegotiation: either refused, or only the secure (RFC 5746) kind
  expect(scan.renegotiation.supported && !scan.renegotiation.secure).toBe(false)
  expect(scan.xml).not.toMatch(/<heartbleed [^>]*vulnerable="1"/)
}

describe('sslscan on the https port', () => {
  for (const [name, sni, subject, alt] of [
    ['with the SNI of a host with an added certificate', ALPHA, ALPHA, `DNS:${ALPHA}`],
    ['with the SNI of another host with an added certificate', BETA, BETA, `DNS:${BETA}`],
    ['with the SNI of a host with an added RSA certificate', GAMMA, GAMMA, `DNS:${GAMMA}`],
    ['with the SNI of an app host without a certificate (self-signed for it)', BARE, BARE, `DNS:${BARE}`],
    ['with the SNI of a name no app answers to (the fallback)', 'nobody.example.test', 'edgeproxy.invalid', 'DNS:edgeproxy.invalid'],
    ['with an IP address as the SNI name (the fallback)', undefined, 'edgeproxy.invalid', 'DNS:edgeproxy.invalid'],
  ] as const) {
    test(name, async () => {
      const scan = await sslscan([...(sni === undefined ? [] : [`--sni-name=${sni}`]), `127.0.0.1:${httpsPort}`])
      expectSoundPosture(scan)
      expect(scan.subject).toBe(subject)
      expect(scan.altnames).toBe(alt)
    })
  }
})

test('sslscan --starttls-psql on the pg_tls port: the same posture after the Postgres SSLRequest', async () => {
  const before = metric(await (await request(`${fleet.node('edge-1').api}/metrics`)).body.text(), 'edgeproxy_proxy_pg_ssl_requests_total')
  const scan = await sslscan(['--starttls-psql', `127.0.0.1:${pgPort}`])
  expectSoundPosture(scan)
  expect(scan.subject).toBe('edgeproxy.invalid') // libpq-style: an IP, no SNI name → the fallback
  const after = metric(await (await request(`${fleet.node('edge-1').api}/metrics`)).body.text(), 'edgeproxy_proxy_pg_ssl_requests_total')
  expect(after - before).toBeGreaterThan(10) // every probe really went through the SSLRequest → 'S' exchange
})

test('openssl s_client -starttls postgres: TLS 1.1 is refused, TLS 1.2 is spoken, no compression', async () => {
  const sclient = (args: string[]): Promise<string> => new Promise((resolve) => {
    const child = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${pgPort}`, '-starttls', 'postgres', ...args], { timeout: 20_000 },
      (_err, stdout, stderr) => resolve(`${String(stdout)}${String(stderr)}`))
    child.stdin?.end()
  })
  const old = await sclient(['-tls1_1'])
  expect(old).toMatch(/no protocols available|alert protocol version|wrong version number|unsupported protocol/i)
  expect(old).toMatch(/Cipher is \(NONE\)/) // no session was made (s_client prints the version it tried anyway)
  const ok = await sclient(['-tls1_2', '-comp'])
  expect(ok).toMatch(/Protocol\s*:\s*TLSv1\.2/)
  expect(ok).toMatch(/Cipher\s*:\s*ECDHE-/)
  expect(ok).toMatch(/Compression: NONE/)
})

// ---- compression (CRIME): offered in a raw ClientHello ----

describe('TLS compression is never chosen', () => {
  for (const [name, port] of [['https port', () => httpsPort], ['pg_tls port (after the SSLRequest)', () => pgPort]] as const) {
    test(`${name}: DEFLATE offered first, the server picks null compression`, async () => {
      const hello = clientHello12(ALPHA, [1, 0])
      const answer = await sendHello(port(), hello, { postgres: port() === pgPort })
      expect(answer.alert).toBeUndefined()
      expect(answer.compression).toBe(0)
      expect(answer.cipher).toBe(0xc02b) // ECDHE-ECDSA-AES128-GCM-SHA256: a real ServerHello was parsed
    })
  }

  test('https port: a ClientHello offering only DEFLATE gets no ServerHello', async () => {
    const answer = await sendHello(httpsPort, clientHello12(ALPHA, [1]))
    expect(answer.compression).toBeUndefined()
    expect(answer.alert !== undefined || answer.closed).toBe(true)
  })
})

// ---- certificate per SNI, as a TLS client checks it ----

function peer(servername: string | undefined): Promise<{ cert: PeerCertificate; protocol: string | null }> {
  const socket = tlsConnect({ host: '127.0.0.1', port: httpsPort, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
  const timer = setTimeout(() => socket.destroy(new Error('TLS handshake did not finish in 10 s')), 10_000)
  return once(socket, 'secureConnect').then(() => {
    clearTimeout(timer)
    const out = { cert: socket.getPeerCertificate(), protocol: socket.getProtocol() }
    socket.destroy()
    return out
  }, (err: unknown) => { clearTimeout(timer); socket.destroy(); throw err })
}

test('each SNI name is served the certificate added for it, byte for byte', async () => {
  for (const host of [ALPHA, BETA, GAMMA]) {
    const { cert, protocol } = await peer(host)
    expect(cert.fingerprint256).toBe(new X509Certificate(certs[host].certPem).fingerprint256)
    expect(protocol).toBe('TLSv1.3')
  }
  const bare = await peer(BARE)
  expect(bare.cert.subject.CN).toBe(BARE)
  expect([ALPHA, BETA, GAMMA].map((h) => new X509Certificate(certs[h].certPem).fingerprint256)).not.toContain(bare.cert.fingerprint256)
  const none = await peer(undefined)
  expect(none.cert.subject.CN).toBe('edgeproxy.invalid')
  // a name differing only in case is the same name (SNI is case-insensitive)
  expect((await peer(ALPHA.toUpperCase())).cert.fingerprint256).toBe(new X509Certificate(certs[ALPHA].certPem).fingerprint256)
})

test('an HTTPS client that trusts only the added certificate verifies it for its name and reaches the app', async () => {
  for (const host of [ALPHA, BETA, GAMMA]) {
    const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: httpsPort, servername: host, path: '/hello', headers: { host }, ca: certs[host].certPem, timeout: 10_000 }, (res) => {
        let text = ''
        res.on('data', (c: Buffer) => { text += c.toString() })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
      })
      req.on('timeout', () => req.destroy(new Error('no answer in 10 s')))
      req.on('error', reject)
      req.end()
    })
    expect(body.status).toBe(200)
    expect(JSON.parse(body.text)).toMatchObject({ app: 'web', path: '/hello' })
  }
  // and the other host's certificate does not verify for this name: SNI really chose
  const wrong = await new Promise<string>((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', port: httpsPort, servername: ALPHA, path: '/', headers: { host: ALPHA }, ca: certs[BETA].certPem, timeout: 10_000 }, (res) => { res.resume(); resolve(`status ${res.statusCode}`) })
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    req.end()
  })
  expect(wrong).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|CERT/)
})
