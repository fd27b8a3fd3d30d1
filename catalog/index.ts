/**
 * The catalog: apps, Machines, nodes and certificates as Automerge documents in LevelDB, with an event
 * log that every other component follows.
 *
 * @example
 * const catalog = await openCatalog({ dataDir: '/var/lib/edgeproxy', nodeName: 'ams-1' })
 * const sub = catalog.subscribe({ fromSeq: 1 }, (event) => console.log(event.seq, event.type))
 * await catalog.deployApp(parseAppConfigText(toml).config)
 * sub.close(); await catalog.close()
 */
export { openCatalog, type OpenCatalogOptions } from './catalog.js'
export { CatalogState } from './catalog-state.js'
export { replayEvents, type ReplayOptions } from './replay.js'
export { openOfflineEventLog, type OfflineEventLog } from './offline-log.js'
export type * from './catalog-api.js'
export { warmUpAutomerge, type WarmUpOptions, type WarmUpResult } from './automerge-warm-up.js'
