import { once } from 'node:events'
import { connect, createServer } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { machineAddress, startHarness, type Harness } from './harness.js'
import { type PgCluster, startPostgres } from './postgres-cluster.js'
import { run } from './tools.js'

let h: Harness
let pg: PgCluster

async function freePortOn(addr: string): Promise<number> {
  const s = createServer()
  s.listen(0, addr)
  await once(s, 'listening')
  const port = (s.address() as { port: number }).port
  s.close()
  await once(s, 'close')
  return port
}

beforeAll(async () => {
  const addr = machineAddress()
  pg = await startPostgres(addr, await freePortOn(addr))
  h = await startHarness()
  await h.deploy(`app = "db"\n[[services]]\ninternal_port = ${pg.port}\n[[services.ports]]\nport = 5432\nhandlers = ["pg_tls"]\n`)
  await h.addMachine('db', { addr, server: createServer(), requests: [] })
}, 60_000)

afterAll(async () => {
  await h?.stop()
  await pg?.stop()
}, 60_000)

function conninfo(extra = ''): string {
  return `host=127.0.0.1 port=${h.port(5432)} user=postgres dbname=postgres sslmode=require ${extra}`
}

test('psql with sslmode=require reaches a PostgreSQL without TLS through pg_tls', async () => {
  const r = await run('psql', [conninfo(), '-At', '-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()', '-c', 'select 40 + 2'])
  expect(r.stderr).toBe('')
  expect(r.code).toBe(0)
  // the database saw a plaintext connection (f); the client had TLS to the proxy (sslmode=require succeeded)
  expect(r.stdout.trim().split('\n')).toEqual(['f', '42'])
})

test('pgbench through pg_tls: 0 failed transactions', async () => {
  const init = await run('pgbench', ['-i', '-s', '1', '-q', conninfo()], { timeoutMs: 60_000 })
  expect(init.code).toBe(0)
  const bench = await run('pgbench', ['-c', '4', '-j', '2', '-T', '3', conninfo()], { timeoutMs: 60_000 })
  expect(bench.code).toBe(0)
  expect(bench.stdout).toMatch(/number of failed transactions: 0 /)
  expect(Number(/number of transactions actually processed: (\d+)/.exec(bench.stdout)?.[1])).toBeGreaterThan(50)
})

test('a client that does not ask for TLS is told to, in a Postgres error', async () => {
  const r = await run('psql', [conninfo().replace('sslmode=require', 'sslmode=disable'), '-c', 'select 1'])
  expect(r.code).not.toBe(0)
  expect(r.stderr).toContain('this port requires TLS')
})

test('bytes sent after the SSLRequest but before the answer are dropped, not fed to TLS or the database', async () => {
  const raw = connect({ host: '127.0.0.1', port: h.port(5432) })
  await once(raw, 'connect')
  // SSLRequest followed at once by bytes an attacker injected before the handshake (CVE-2021-23214 style)
  raw.write(Buffer.concat([Buffer.from('0000000804d2162f', 'hex'), Buffer.from('Q\0\0\0\x0dselect 1\0')]))
  const [answer] = await once(raw, 'data') as [Buffer]
  expect(answer.toString()).toBe('S')
  const secure = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: 'db.localhost' })
  await once(secure, 'secureConnect')
  // StartupMessage (protocol 3.0, user postgres, database postgres)
  const params = Buffer.from('user\0postgres\0database\0postgres\0\0')
  const startup = Buffer.alloc(8 + params.length)
  startup.writeInt32BE(startup.length, 0)
  startup.writeInt32BE(196608, 4)
  params.copy(startup, 8)
  secure.write(startup)
  const [reply] = await once(secure, 'data') as [Buffer]
  expect(String.fromCharCode(reply[0])).toBe('R') // AuthenticationOk: the database got a clean startup
  expect(reply.readInt32BE(5)).toBe(0)
  secure.destroy()
})

test('a GSSENCRequest is declined with N and the client may then ask for SSL', async () => {
  const raw = connect({ host: '127.0.0.1', port: h.port(5432) })
  await once(raw, 'connect')
  raw.write(Buffer.from('0000000804d21630', 'hex'))
  const [first] = await once(raw, 'data') as [Buffer]
  expect(first.toString()).toBe('N')
  raw.write(Buffer.from('0000000804d2162f', 'hex'))
  const [second] = await once(raw, 'data') as [Buffer]
  expect(second.toString()).toBe('S')
  raw.destroy()
})

test('direct TLS (libpq 17 style, ALPN postgresql) is accepted without an SSLRequest', async () => {
  const secure = tlsConnect({ host: '127.0.0.1', port: h.port(5432), rejectUnauthorized: false, ALPNProtocols: ['postgresql'] })
  await once(secure, 'secureConnect')
  const params = Buffer.from('user\0postgres\0database\0postgres\0\0')
  const startup = Buffer.alloc(8 + params.length)
  startup.writeInt32BE(startup.length, 0)
  startup.writeInt32BE(196608, 4)
  params.copy(startup, 8)
  secure.write(startup)
  const [reply] = await once(secure, 'data') as [Buffer]
  expect(String.fromCharCode(reply[0])).toBe('R')
  secure.destroy()
})
