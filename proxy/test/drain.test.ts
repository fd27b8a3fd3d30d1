import { once } from 'node:events'
import type { ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { echoHandler, httpApp, startHarness, type Harness } from './harness.js'
import { RawConnection } from './raw-client.js'

let h: Harness | undefined
afterEach(async () => { await h?.stop(); h = undefined })

test('stop() stops accepting, lets requests in flight finish, and closes idle connections', async () => {
  h = await startHarness({ timeouts: { drainMs: 5000 } })
  let held: ServerResponse | undefined
  let arrived!: () => void
  const heldArrived = new Promise<void>((resolve) => { arrived = resolve })
  const { port, machines } = await h.httpMachines(1, (req, res, m) => {
    if (req.url === '/slow') { held = res; arrived(); return }
    echoHandler(req, res, m)
  })
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])
  const publicPort = h.port(80)

  const idle = await RawConnection.open(publicPort)
  idle.write('GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n')
  await idle.until((t) => t.endsWith('}'))

  const inFlight = request(h.url(80, '/slow'), { headers: { host: 'web.localhost' } })
  await heldArrived
  const stopping = h.proxy.stop()

  await idle.until(() => false, 3000).catch(() => undefined)
  expect(idle.closed).toBe(true) // idle keep-alive connection closed at once
  const refused = await new Promise<string>((resolve) => {
    const s = connect(publicPort, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve('accepted') })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
  })
  expect(refused).toBe('ECONNREFUSED')

  held!.writeHead(200, { 'content-length': 4 })
  held!.end('done')
  const res = await inFlight
  expect(res.statusCode).toBe(200)
  expect(res.headers.connection).toBe('close')
  expect(await res.body.text()).toBe('done')
  await stopping
  expect(h.proxy.stats.connectionsOpen).toBe(0)
})

test('work still running at the drain deadline is cut off and stop() returns', async () => {
  h = await startHarness({ timeouts: { drainMs: 300 } })
  const { port, machines } = await h.httpMachines(1, () => { /* never answers */ })
  await h.deploy(httpApp('web', port))
  await h.addMachine('web', machines[0])
  const pending = request(h.url(80, '/forever'), { headers: { host: 'web.localhost' } }).catch((err: Error) => err)
  await once(machines[0].server, 'request')
  const started = Date.now()
  await h.proxy.stop()
  expect(Date.now() - started).toBeLessThan(3000)
  expect(await pending).toBeInstanceOf(Error)
})
