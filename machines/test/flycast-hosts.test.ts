import { readFile } from 'node:fs/promises'
import pino from 'pino'
import { afterEach, expect, test } from 'vitest'
import { openCatalog } from '../../catalog/index.js'
import type { Catalog } from '../../catalog/catalog-api.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { flycastHostsFile, flycastHostsPath, renderFlycastHosts } from '../flycast-hosts.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => { for (const f of cleanup.splice(0).reverse()) await f() })

async function catalogIn(dir: string): Promise<Catalog> {
  const catalog = await openCatalog({ dataDir: dir, nodeName: 'w1', logger: pino({ level: 'silent' }), sync: false })
  cleanup.push(() => catalog.close())
  return catalog
}

const app = (name: string) => parseAppConfigText(`app = "${name}"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`).config

test('the hosts file lists owners only, sorted, in /etc/hosts format', () => {
  const text = renderFlycastHosts([{ name: 'web', flycast: '127.77.0.9' }, { name: 'api', flycast: '127.77.0.7' }, { name: 'zz', flycast: '127.77.0.9' }, { name: 'none' }])
  expect(text.split('\n').filter((l) => !l.startsWith('#'))).toEqual(['127.77.0.7\tapi.flycast', '127.77.0.9\tweb.flycast', ''])
})

test('the file exists once started and follows allocations and removals', async () => {
  const dir = await tempDir()
  cleanup.push(dir.remove)
  const catalog = await catalogIn(dir.path)
  await catalog.deployApp(app('web'))
  await catalog.setFlycast('web', '127.77.1.2')
  const hosts = flycastHostsFile({ dataDir: dir.path })({ catalog, log: pino({ level: 'silent' }) })
  await hosts.start()
  cleanup.push(() => hosts.stop())
  const path = flycastHostsPath(dir.path)
  expect(await readFile(path, 'utf8')).toContain('127.77.1.2\tweb.flycast\n')

  await catalog.deployApp(app('api'))
  await catalog.setFlycast('api', '127.77.1.3')
  await waitFor(async () => (await readFile(path, 'utf8')).includes('127.77.1.3\tapi.flycast\n'), { what: 'api in the file' })
  await catalog.removeApp('web')
  const text = await waitFor(async () => { const t = await readFile(path, 'utf8'); return t.includes('web.flycast') ? undefined : t }, { what: 'web gone from the file' })
  expect(text).toContain('127.77.1.3\tapi.flycast\n')
})
