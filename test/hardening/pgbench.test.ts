import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { initPostgresData, pgBin } from '../../proxy/test/postgres-cluster.js'
import { run } from '../../proxy/test/tools.js'
import { DaemonFleet, metric } from './helpers/daemon-fleet.js'

/**
 * Issue 11 item 12: pgbench (the real tool) through a real daemon's `pg_tls` port for 60 s, then 20 s with
 * a new connection — SSLRequest, `S`, TLS handshake, Postgres startup — for every transaction. The Machine
 * is a real PostgreSQL run by the daemon's supervisor, listening without TLS: the client's `sslmode=require`
 * can only succeed because edgeproxy answers the SSLRequest and terminates TLS. Asserted from what pgbench
 * prints: 0 failed transactions, steady progress every 10 s, a floor of transactions; and from the
 * daemon's metrics: every connection was an SSLRequest and a TLS handshake at the proxy.
 */
const BENCH_SECONDS = Number(process.env.HARDENING_PGBENCH_SECONDS ?? 60)
const CONNECT_SECONDS = Number(process.env.HARDENING_PGBENCH_CONNECT_SECONDS ?? 20)
const fleet = new DaemonFleet()
let pgRoot: string | undefined
let machine: MachineRecord
let port = 0

async function proxyMetrics(): Promise<{ sslRequests: number; handshakes: number; handshakeFailures: number }> {
  const text = await (await request(`${fleet.node('pg-1').api}/metrics`, { headersTimeout: 10_000, bodyTimeout: 10_000 })).body.text()
  return {
    sslRequests: metric(text, 'edgeproxy_proxy_pg_ssl_requests_total'),
    handshakes: metric(text, 'edgeproxy_proxy_tls_handshakes_total'),
    handshakeFailures: metric(text, 'edgeproxy_proxy_tls_handshake_failures_total'),
  }
}

beforeAll(async () => {
  // a database folder the postgres user owns (shared/TOOLCHAIN.md §2); the supervisor runs the server
  const pg = await initPostgresData('edgeproxy-pgbench-')
  pgRoot = pg.root
  const data = pg.data

  await fleet.init()
  await fleet.start({ name: 'pg-1', region: 'ams', roles: 'edge,worker', extra: ['--no-fsync'] })
  await fleet.deploy('pg-1', `app = "db"\n[[services]]\ninternal_port = 5432\n[services.concurrency]\ntype = "connections"\nsoft_limit = 50\n[[services.ports]]\nport = 5432\nhandlers = ["pg_tls"]\n[[services.tcp_checks]]\ninterval = "500ms"\ntimeout = "2s"\ngrace_period = "0s"\n`)
  const postgres = `exec runuser -u postgres -- ${join(pgBin(), 'postgres')} -D ${data} -k ${data} -c listen_addresses=$FLY_PRIVATE_IP -p $PORT -c ssl=off -c fsync=off -c synchronous_commit=off -c max_connections=40`
  const created = await fleet.machine('pg-1', 'db', { node: 'pg-1', cmd: ['/bin/sh', '-c', postgres] })
  machine = await fleet.waitMachine('pg-1', created.id, (m) => m.state === 'started' && m.ready, 'PostgreSQL started and accepting', 60_000)
  port = await fleet.publicPort('pg-1', 5432)
}, 120_000)

afterAll(async () => {
  await fleet.stopAll()
  if (pgRoot !== undefined) rmSync(pgRoot, { recursive: true, force: true })
}, 60_000)

const conninfo = (): string => `host=127.0.0.1 port=${port} user=postgres dbname=postgres sslmode=require connect_timeout=15`

/** pgbench's summary and its `-P` progress lines. */
function summary(out: string): { processed: number; failed: number | undefined; progress: Array<{ at: number; tps: number }> } {
  return {
    processed: Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1] ?? -1),
    failed: /number of failed transactions: (\d+) /.exec(out) === null ? undefined : Number(/number of failed transactions: (\d+) /.exec(out)![1]),
    progress: [...out.matchAll(/^progress: ([\d.]+) s, ([\d.]+) tps/gm)].map((m) => ({ at: Number(m[1]), tps: Number(m[2]) })),
  }
}

test('the database behind pg_tls sees plaintext from its Machine address; the client had TLS to edgeproxy', async () => {
  const before = await proxyMetrics()
  const r = await run('psql', [conninfo(), '-At', '-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()', '-c', `select current_setting('listen_addresses')`], { timeoutMs: 30_000 })
  expect(r.stderr).toBe('')
  expect(r.code).toBe(0)
  expect(r.stdout.trim().split('\n')).toEqual(['f', machine.privateAddr])
  const after = await proxyMetrics()
  expect(after.sslRequests - before.sslRequests).toBe(1)
  expect(after.handshakes - before.handshakes).toBe(1)
  // and the same server refuses a client that insists on plaintext: TLS is not optional on this port
  const plain = await run('psql', [conninfo().replace('sslmode=require', 'sslmode=disable'), '-c', 'select 1'], { timeoutMs: 30_000 })
  expect(plain.code).not.toBe(0)
  expect(plain.stderr).toContain('this port requires TLS')
})

test(`pgbench -c 8 -j 2 for ${BENCH_SECONDS} s through pg_tls: 0 failed transactions, progress every interval`, async () => {
  const init = await run('pgbench', ['-i', '-s', '2', '-q', conninfo()], { timeoutMs: 120_000 })
  expect(init.stderr).toMatch(/done in/)
  expect(init.code).toBe(0)

  const before = await proxyMetrics()
  const bench = await run('pgbench', ['-c', '8', '-j', '2', '-T', String(BENCH_SECONDS), '-P', '10', conninfo()], { timeoutMs: (BENCH_SECONDS + 60) * 1000 })
  const after = await proxyMetrics()
  const out = `${bench.stdout}${bench.stderr}`
  console.log(`pgbench ${BENCH_SECONDS} s:\n${out}`)
  expect(bench.code).toBe(0)
  const s = summary(out)
  expect(s.failed).toBe(0)
  expect(out).not.toMatch(/aborted|error|could not|server closed/i)
  // a floor far below what the two shared cores do, far above a run that stalled for long
  expect(s.processed).toBeGreaterThan(BENCH_SECONDS * 10)
  // -P 10: a progress line per interval, none of them a stall
  expect(s.progress.length).toBeGreaterThanOrEqual(Math.floor(BENCH_SECONDS / 10) - 1)
  expect(s.progress.filter((p) => p.tps <= 0)).toEqual([])
  // the 8 clients (and pgbench's own setup connection) came through the SSLRequest and a TLS handshake
  expect(after.sslRequests - before.sslRequests).toBeGreaterThanOrEqual(8)
  expect(after.handshakes - before.handshakes).toBeGreaterThanOrEqual(8)
  expect(after.handshakeFailures - before.handshakeFailures).toBe(0)
}, (BENCH_SECONDS + 120) * 1000)

test(`pgbench -C (a new TLS connection per transaction) for ${CONNECT_SECONDS} s: 0 failed, every transaction its own handshake`, async () => {
  const before = await proxyMetrics()
  const bench = await run('pgbench', ['-C', '-c', '4', '-j', '2', '-T', String(CONNECT_SECONDS), '-P', '5', '-S', conninfo()], { timeoutMs: (CONNECT_SECONDS + 60) * 1000 })
  const after = await proxyMetrics()
  const out = `${bench.stdout}${bench.stderr}`
  console.log(`pgbench -C ${CONNECT_SECONDS} s:\n${out}`)
  expect(bench.code).toBe(0)
  const s = summary(out)
  expect(s.failed).toBe(0)
  expect(out).not.toMatch(/aborted|error|could not|server closed/i)
  expect(s.processed).toBeGreaterThan(CONNECT_SECONDS * 5)
  expect(s.progress.filter((p) => p.tps <= 0)).toEqual([])
  // each transaction opened its own connection: an SSLRequest and a full TLS handshake at edgeproxy
  expect(after.sslRequests - before.sslRequests).toBeGreaterThanOrEqual(s.processed)
  expect(after.handshakes - before.handshakes).toBeGreaterThanOrEqual(s.processed)
  expect(after.handshakeFailures - before.handshakeFailures).toBe(0)
}, (CONNECT_SECONDS + 120) * 1000)
