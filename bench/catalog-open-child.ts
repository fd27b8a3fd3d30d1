import '../tools/polyfills.js'
import { openCatalog } from '../catalog/index.js'

/** Opens a data dir in a fresh process and reports how long it took and the memory it holds. */
const dataDir = process.argv[2]
const started = process.hrtime.bigint()
const catalog = await openCatalog({ dataDir, nodeName: 'bench-1' })
const ms = Number(process.hrtime.bigint() - started) / 1e6
const machines = catalog.listMachines().length
const apps = catalog.listApps().length
global.gc?.()
const rss = process.memoryUsage().rss
// replay rate: every event from the start of the log, through subscribe
const replayStarted = process.hrtime.bigint()
let count = 0
const last = catalog.lastSeq
await new Promise<void>((resolve) => {
  const sub = catalog.subscribe({ fromSeq: 1 }, (e) => {
    count++
    if (e.seq === last) {
      sub.close()
      resolve()
    }
  })
})
const replayMs = Number(process.hrtime.bigint() - replayStarted) / 1e6
await catalog.close()
process.stdout.write(JSON.stringify({ ms, rss, apps, machines, events: count, replayMs }))
