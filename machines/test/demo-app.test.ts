import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { demoAppCommand } from '../demo-app-command.js'
import { readMachineLogs } from '../logs/read-logs.js'
import { harness, type Harness, isReady, waitMachine } from './harness.js'

let h: Harness | undefined
afterEach(async () => { await h?.teardown(); h = undefined })

test('the demo app runs as a Machine: it answers with its identity and the headers it saw, and exits cleanly', async () => {
  h = await harness()
  await h.deploy('demo', `[http_service]\ninternal_port = ${h.port}\n[[http_service.checks]]\npath = "/healthz"\ngrace_period = "0s"\ninterval = "2s"\ntimeout = "1s"\n`)
  const m = await h.run('demo', {}, demoAppCommand())
  const ready = await waitMachine(h.catalog, m.id, isReady, 'ready', 15_000)
  const base = `http://${ready.privateAddr}:${h.port}`

  const json = await request(`${base}/some/path?q=1`, { headers: { 'x-test': 'yes' } })
  expect(json.statusCode).toBe(200)
  expect(await json.body.json()).toMatchObject({ app: 'demo', machine: m.id, region: 'ams', method: 'GET', path: '/some/path?q=1', headers: { 'x-test': 'yes' } })

  const health = await request(`${base}/healthz`)
  expect([health.statusCode, await health.body.text()]).toEqual([200, 'ok'])

  const html = await request(`${base}/`, { headers: { accept: 'text/html' } })
  expect(html.headers['content-type']).toContain('text/html')
  expect(await html.body.text()).toContain(`Machine <b>${m.id}</b> in region <b>ams</b>`)

  await h.catalog.setDesiredState(m.id, 'stopped', 'test: stop')
  await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped', 'stopped')
  const log: string[] = []
  for await (const line of readMachineLogs(h.dir, m.id)) log.push(line)
  const text = log.join('\n')
  expect(text).toContain(`demo app demo (Machine ${m.id}, region ams) listening on ${base}`)
  expect(text).toContain('demo app: SIGINT received, shutting down')
  expect(text).toContain('[edgeproxy] exited with code 0')
})
