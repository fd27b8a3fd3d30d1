import { afterEach, beforeEach, expect, test } from 'vitest'
import fc from 'fast-check'
import { join } from 'node:path'
import { openCatalog, replayEvents } from '../index.js'
import type { Catalog, CatalogSnapshot } from '../catalog-api.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { webConfig } from './fixtures.js'

let dir: Awaited<ReturnType<typeof tempDir>>
beforeEach(async () => { dir = await tempDir() })
afterEach(async () => { await dir.remove() })

let counter = 0
async function withCatalog<T>(fn: (c: Catalog) => Promise<T>): Promise<T> {
  const c = await openCatalog({ dataDir: join(dir.path, `n${counter++}`), nodeName: 'ams-1', sync: false })
  try {
    return await fn(c)
  } finally {
    await c.close()
  }
}

function write(c: Catalog, i: number): Promise<unknown> {
  if (i % 7 === 0) return c.deployApp(webConfig(`app${i % 3}`))
  return c.createMachine({ app: 'app0', region: 'ams', node: 'ams-1', spec: { cmd: [String(i)] } })
}

test('subscribe({fromSeq}) joins the replayed log and live events with no gap and no duplicate, under concurrent writes', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 30 }), // writes before subscribing
      fc.integer({ min: 1, max: 30 }), // writes racing the subscription
      fc.integer({ min: 0, max: 40 }), // how far back to start
      fc.boolean(), // reopen first, so that the replay reads the log from disk rather than memory
      async (before, racing, back, reopen) => {
        const dataDir = join(dir.path, `n${counter++}`)
        let c = await openCatalog({ dataDir, nodeName: 'ams-1', sync: false })
        try {
          await c.deployApp(webConfig('app0'))
          for (let i = 1; i <= before; i++) await write(c, i)
          if (reopen) {
            await c.close()
            c = await openCatalog({ dataDir, nodeName: 'ams-1', sync: false })
          }
          const fromSeq = Math.max(1, c.lastSeq + 1 - back)
          const inFlight = Array.from({ length: racing }, (_, i) => write(c, before + 1 + i))
          const seen: number[] = []
          const sub = c.subscribe({ fromSeq }, (e) => seen.push(e.seq))
          await Promise.all(inFlight)
          const last = c.lastSeq
          const deadline = Date.now() + 5000
          while (seen.at(-1) !== last && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2))
          sub.close()
          expect(seen).toEqual(Array.from({ length: last - fromSeq + 1 }, (_, i) => fromSeq + i))
        } finally {
          await c.close()
        }
      },
    ),
    { numRuns: 30 },
  )
})

function normalized(s: Pick<CatalogSnapshot, 'apps' | 'machines'>) {
  return {
    apps: [...s.apps].sort((a, b) => a.name.localeCompare(b.name)),
    machines: [...s.machines].sort((a, b) => a.id.localeCompare(b.id)),
  }
}

test('replaying the log to seq N rebuilds exactly the catalog as it stood at N', async () => {
  await withCatalog(async (c) => {
    const snapshots = new Map<number, ReturnType<typeof normalized>>()
    await c.deployApp(webConfig('web'))
    for (let i = 0; i < 30; i++) {
      const m = await c.createMachine({ app: 'web', region: 'ams', node: 'ams-1', spec: { cmd: ['x'] } })
      if (i % 3 === 0) await c.reportObserved(m.id, { state: 'started', reason: 'running', privateAddr: `127.66.0.${i + 2}` })
      if (i % 4 === 0) await c.reportHealth(m.id, { checks: { c: i % 8 === 0 ? 'passing' : 'critical' }, ready: i % 8 === 0 })
      if (i % 5 === 0) await c.setDesiredState(m.id, 'stopped', `test ${i}`)
      if (i === 20) await c.deployApp(webConfig('web', '[env]\nX = "2"\n'))
      snapshots.set(c.lastSeq, normalized(c.snapshot()))
    }
    await c.removeApp('web')
    snapshots.set(c.lastSeq, normalized(c.snapshot()))

    for (const [seq, expected] of snapshots) {
      const replayed = await replayEvents(c.readEvents(1), { toSeq: seq })
      expect(replayed.seq).toBe(seq)
      expect(normalized(replayed.snapshot())).toEqual(expected)
    }
  })
})
