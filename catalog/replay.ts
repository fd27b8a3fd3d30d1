import type { CatalogEvent } from '../schemas/catalog-events.js'
import { CatalogState } from './catalog-state.js'

export interface ReplayOptions {
  /** Last seq to apply (default: the end of the log). */
  toSeq?: number
  /** Called every `progressEvery` events (default 10 000). */
  onProgress?: (seq: number) => void
  progressEvery?: number
}

/** Folds a log into the catalog as it stood at `toSeq`: the same reducer the live catalog reads from. */
export async function replayEvents(events: AsyncIterable<CatalogEvent>, options: ReplayOptions = {}): Promise<CatalogState> {
  const state = new CatalogState()
  const every = options.progressEvery ?? 10_000
  for await (const e of events) {
    if (options.toSeq !== undefined && e.seq > options.toSeq) break
    state.apply(e)
    if (options.onProgress !== undefined && e.seq % every === 0) options.onProgress(e.seq)
  }
  return state
}
