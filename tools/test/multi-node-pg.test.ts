import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { initPostgresData, pgBin } from '../../proxy/test/postgres-cluster.js'
import { run } from '../../proxy/test/tools.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { json, MultiNodeFleet } from './multi-node-harness.js'

/**
 * psql through a pg_tls service whose Machine — a real PostgreSQL 15, run by the worker's supervisor — is
 * on another node: the client's TLS ends at the ams edge, the plaintext Postgres stream crosses the
 * backhaul to iad-1, and iad-1 connects to the database as it would for a local client.
 */
const fleet = new MultiNodeFleet({ rtt: [['ams-1', 'iad-1', 20]] })
let pgRoot: string | undefined
let machine: MachineRecord

beforeAll(async () => {
  // a database folder the postgres user owns (TOOLCHAIN §2); the worker's supervisor runs the server
  const pg = await initPostgresData('edgeproxy-pg-multinode-')
  pgRoot = pg.root
  const data = pg.data

  await fleet.init()
  await fleet.start('ams-1', 'ams', 'edge')
  await fleet.start('iad-1', 'iad', 'worker')
  await fleet.deploy('iad-1', `app = "db"\n[[services]]\ninternal_port = 55432\n[[services.ports]]\nport = 5432\nhandlers = ["pg_tls"]\n[[services.tcp_checks]]\ninterval = "200ms"\ntimeout = "1s"\ngrace_period = "0s"\n`)
  await waitFor(() => json<unknown[]>(`${fleet.node('iad-1').api}/v1/apps`).then((a) => a.length > 0), { timeoutMs: 15_000, what: 'the app on iad-1' })
  const postgres = `exec runuser -u postgres -- ${join(pgBin(), 'postgres')} -D ${data} -k ${data} -c listen_addresses=$FLY_PRIVATE_IP -p $PORT -c ssl=off -c fsync=off`
  const created = await fleet.machine('iad-1', 'db', {}, ['/bin/sh', '-c', postgres])
  machine = await fleet.waitMachine('ams-1', created.id, (m) => m.state === 'started' && m.ready, 'PostgreSQL started and accepting', 60_000)
}, 120_000)

afterAll(async () => {
  await fleet.stopAll()
  if (pgRoot !== undefined) rmSync(pgRoot, { recursive: true, force: true })
}, 60_000)

test('psql with sslmode=require at the ams edge reaches PostgreSQL on iad-1 over the backhaul', async () => {
  const port = await fleet.node('ams-1').publicPort(5432)
  const conninfo = `host=127.0.0.1 port=${port} user=postgres dbname=postgres sslmode=require connect_timeout=10`
  const r = await run('psql', [conninfo, '-At', '-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()', '-c', `select current_setting('listen_addresses')`, '-c', 'select 40 + 2'], { timeoutMs: 30_000 })
  expect(r.stderr).toBe('')
  expect(r.code).toBe(0)
  // the client had TLS to the edge (sslmode=require succeeded); the database, on iad-1's Machine address, saw plaintext
  expect(r.stdout.trim().split('\n')).toEqual(['f', machine.privateAddr, '42'])

  const init = await run('pgbench', ['-i', '-s', '1', '-q', conninfo], { timeoutMs: 60_000 })
  expect(init.code).toBe(0)
  const bench = await run('pgbench', ['-c', '4', '-j', '2', '-T', '2', conninfo], { timeoutMs: 60_000 })
  expect(bench.code).toBe(0)
  expect(bench.stdout).toMatch(/number of failed transactions: 0 /)
  expect(Number(/number of transactions actually processed: (\d+)/.exec(bench.stdout)?.[1])).toBeGreaterThan(20)
}, 60_000)
