import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from 'vitest'
import type { Browser } from 'playwright-core'
import { request } from 'undici'
import pino from 'pino'
import { openCatalog, type Catalog } from '../../catalog/index.js'
import { adminApi, type AdminApi } from '../admin-api/server.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { launchChromium, waitForText } from '../../test/helpers/browser.js'

let browser: Browser
let dir: Awaited<ReturnType<typeof tempDir>>
let catalog: Catalog
let api: AdminApi

beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => { await browser?.close() })
beforeEach(async () => {
  dir = await tempDir()
  catalog = await openCatalog({ dataDir: dir.path, nodeName: 'ams-1', sync: false })
  await catalog.upsertSelf({ name: 'ams-1', region: 'ams', roles: ['edge', 'worker'], gossip: [], startedAt: Date.now(), load: { machines: 0, connections: 0 }, version: 'test' })
  api = adminApi({ host: '127.0.0.1', port: 0 })({ catalog, self: { name: 'ams-1', region: 'ams', roles: ['edge', 'worker'] }, log: pino({ level: 'silent' }) })
  await api.start()
})
afterEach(async () => {
  await api.stop()
  await catalog.close()
  await dir.remove()
})

test('the dashboard shows a Machine appear and change state live, without a reload', async () => {
  const page = await browser.newPage()
  try {
    const base = `http://${api.address()}`
    await page.goto(`${base}/ui`)
    await page.locator('#stream', { hasText: 'live' }).waitFor({ timeout: 10_000 })
    await waitForText(page.locator('#nodes tbody tr').first(), 'ams-1 (this node)')

    const deploy = await request(`${base}/v1/apps/web`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'app = "web"\nprimary_region = "ams"\n[http_service]\ninternal_port = 8080\n' })
    expect(deploy.statusCode).toBe(201)
    await deploy.body.dump()
    const created = await request(`${base}/v1/apps/web/machines`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cmd: ['node', 'server.js'] }) })
    const machine = (await created.body.json()) as { id: string }

    const row = page.locator(`#machines tbody tr[data-key="${machine.id}"]`)
    await row.waitFor({ timeout: 10_000 })
    await waitForText(row.locator('td').nth(4), (t) => t === 'created')
    await waitForText(page.locator('#apps tbody tr[data-key="web"]'), '80, 443')

    // the host reports the Machine running: the row changes in place
    await catalog.reportObserved(machine.id, { state: 'started', reason: 'process running', privateAddr: '127.66.0.2' })
    await catalog.reportHealth(machine.id, { checks: { 'servicecheck-00-http-8080': 'passing' }, ready: true })
    await page.locator(`#machines tbody tr[data-key="${machine.id}"] td.state-started`).waitFor({ timeout: 10_000 })
    await waitForText(row, '127.66.0.2')
    await waitForText(row, 'passing')
    await waitForText(page.locator('#events li').first(), 'health.changed')
    expect(await page.evaluate('performance.getEntriesByType("navigation").length')).toBe(1) // never reloaded
  } finally {
    await page.close()
  }
})

