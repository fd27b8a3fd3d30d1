import { access } from 'node:fs/promises'
import { join } from 'node:path'
import type { CatalogEvent } from '../schemas/catalog-events.js'
import { EdgeProxyError } from '../schemas/errors.js'
import { EventLog } from './event-log.js'
import { openDb } from './storage/level-db.js'
import pino from 'pino'

export interface OfflineEventLog {
  readonly lastSeq: number
  events(fromSeq: number, toSeq?: number): AsyncIterable<CatalogEvent>
  close(): Promise<void>
}

/** Reads a stopped node's event log straight from its data dir (`edgeproxy events replay`). */
export async function openOfflineEventLog(dataDir: string): Promise<OfflineEventLog> {
  const location = join(dataDir, 'catalog')
  try {
    await access(location)
  } catch {
    throw new EdgeProxyError('EP_NOT_FOUND', `no catalog in ${dataDir} (expected ${location}); pass the node's --data-dir`)
  }
  let db
  try {
    db = await openDb(location)
  } catch (err) {
    const busy = (err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED'
    throw new EdgeProxyError('EP_CONFLICT', busy
      ? `the catalog in ${location} is in use by a running daemon; stop it first, or follow it live with \`edgeproxy events tail\``
      : `cannot open ${location}: ${(err as Error).message}`, { cause: err })
  }
  const opened = db
  const log = new EventLog(opened, await EventLog.readLastSeq(opened), pino({ level: 'silent' }))
  return {
    lastSeq: log.lastSeq,
    events: (fromSeq, toSeq) => log.readEvents(fromSeq, toSeq),
    close: async () => { await opened.close() },
  }
}
