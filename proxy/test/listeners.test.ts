import { once } from 'node:events'
import { connect } from 'node:net'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { httpApp, startHarness, type Harness } from './harness.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })
}

test('a deploy opens its ports and a removal closes them, without a restart', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])
  expect(h.proxy.boundPort(9100)).toBeUndefined()

  await h.deploy(`app = "api"\n[[services]]\ninternal_port = ${port}\n[[services.ports]]\nport = 9100\nhandlers = ["http"]\n`)
  await h.addMachine('api', machines[0])
  const apiPort = h.port(9100)
  const res = await request(`http://127.0.0.1:${apiPort}/`, { headers: { host: 'api.localhost' } })
  expect(res.statusCode).toBe(200)
  await res.body.text()

  await h.catalog.removeApp('api')
  await h.settle()
  expect(h.proxy.boundPort(9100)).toBeUndefined()
  expect(await refused(apiPort)).toBe(true)
  // the other app's port is untouched
  const still = await request(h.url(80), { headers: { host: 'web.localhost' } })
  expect(still.statusCode).toBe(200)
  await still.body.text()
})

test('apps share an HTTP port by Host; a plaintext TCP port belongs to the first app that claims it', async () => {
  h = await startHarness()
  const web = await h.httpMachines(1)
  const api = await h.httpMachines(1)
  await h.deploy(httpApp('web', web.port))
  await h.deploy(httpApp('api', api.port), ['api.example.test'])
  await h.addMachine('web', web.machines[0])
  await h.addMachine('api', api.machines[0])
  for (const [host, addr] of [['web.localhost', web.machines[0].addr], ['api.example.test', api.machines[0].addr], ['api.localhost', api.machines[0].addr]]) {
    const res = await request(h.url(80), { headers: { host } })
    expect((await res.body.json() as { machine: string }).machine).toBe(addr)
  }

  const first = await h.tcpMachines(1, (s) => s.end('first\n'))
  const second = await h.tcpMachines(1, (s) => s.end('second\n'))
  await h.deploy(`app = "tcp-a"\n[[services]]\ninternal_port = ${first.port}\n[[services.ports]]\nport = 9200\n`)
  await h.deploy(`app = "tcp-b"\n[[services]]\ninternal_port = ${second.port}\n[[services.ports]]\nport = 9200\n`)
  await h.addMachine('tcp-a', first.machines[0])
  await h.addMachine('tcp-b', second.machines[0])
  const s = connect(h.port(9200), '127.0.0.1')
  const chunks: Buffer[] = []
  s.on('data', (c: Buffer) => chunks.push(c))
  await once(s, 'close')
  expect(Buffer.concat(chunks).toString()).toBe('first\n')
})
