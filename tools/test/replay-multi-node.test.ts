import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { json, MultiNodeFleet } from './multi-node-harness.js'

/**
 * fly-replay across real daemons (issue 9 on top of issue 7's backhaul): ams-1 (edge + worker) and iad-1
 * (worker only), child processes joined by gossip. The ams Machine of `web` answers every
 * first request with `fly-replay: region=iad`; the replay must cross the backhaul to the Machine on iad-1.
 */
const REPLAY_MACHINE = join(import.meta.dirname, 'fixtures', 'replay-machine.mjs')
// no relay delays: the replay names its region, so closeness plays no part here
const fleet = new MultiNodeFleet({ heartbeatMs: 200, downAfterMs: 2000 })
const machines: Record<string, MachineRecord> = {}

const WEB = `app = "web"
primary_region = "ams"
[[services]]
internal_port = 8080
protocol = "tcp"
[services.concurrency]
type = "requests"
soft_limit = 10
[[services.ports]]
port = 80
handlers = ["http"]
[[services.http_checks]]
path = "/healthz"
interval = "200ms"
timeout = "1s"
grace_period = "0s"
`

beforeAll(async () => {
  await fleet.init()
  await fleet.start('ams-1', 'ams', 'edge,worker')
  await fleet.start('iad-1', 'iad', 'worker')
  await fleet.deploy('ams-1', WEB)
  await waitFor(() => json<unknown[]>(`${fleet.node('iad-1').api}/v1/apps`).then((a) => a.length > 0), { timeoutMs: 15_000, what: 'the app on iad-1' })
  machines.ams = await fleet.machine('ams-1', 'web', { REPLAY: 'region=iad' }, [process.execPath, REPLAY_MACHINE])
  machines.iad = await fleet.machine('iad-1', 'web', {}, [process.execPath, REPLAY_MACHINE])
  for (const m of Object.values(machines)) await fleet.waitMachine('ams-1', m.id, (x) => x.state === 'started' && x.ready, 'started and ready')
}, 90_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

test('a fly-replay to a region served by another node crosses the backhaul, body and fly-replay-src included', async () => {
  const port = await fleet.node('ams-1').publicPort(80)
  const res = await request(`http://127.0.0.1:${port}/orders?id=5`, { method: 'POST', body: 'order-payload', headers: { host: 'web.localhost' } })
  const body = await res.body.json() as { machine: string; region: string; path: string; body: string; headers: Record<string, string> }
  expect(res.statusCode).toBe(200)
  expect(body.machine).toBe(machines.iad.id)
  expect(body.region).toBe('iad')
  expect(body.path).toBe('/orders?id=5')
  expect(body.body).toBe('order-payload')
  expect(body.headers['fly-replay-src']).toMatch(new RegExp(`^instance=${machines.ams.id};region=ams;t=\\d+$`))
  expect(Object.keys(res.headers).filter((k) => k.startsWith('fly-replay'))).toEqual([])
})
