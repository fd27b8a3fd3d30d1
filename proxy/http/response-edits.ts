import type { ServicePortConfig } from '../../schemas/app-config.js'

/**
 * `http_options.response` of one port, compiled once per deploy (FLY-SPEC §2, §7): header names to drop
 * from the Machine's response and the lines to add, applied last; `pristine` leaves Server, Via and
 * Fly-Request-Id alone.
 */
export interface ResponseEdits {
  readonly pristine: boolean
  /** Lower-case names whose response lines are removed (every configured name: set replaces, false deletes). */
  readonly drop: ReadonlySet<string>
  /** `Name: value\r\n` lines appended after the Machine's headers. */
  readonly addLines: string
  /** The same additions as pairs, for HTTP/2 responses. */
  readonly addPairs: ReadonlyArray<readonly [string, string]>
}

export const NO_EDITS: ResponseEdits = { pristine: false, drop: new Set(), addLines: '', addPairs: [] }

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

export function compileResponseEdits(port: ServicePortConfig): ResponseEdits {
  const response = port.http_options?.response
  if (response === undefined) return NO_EDITS
  const entries = Object.entries(response.headers)
  if (entries.length === 0 && !response.pristine) return NO_EDITS
  const drop = new Set<string>()
  const addPairs: Array<readonly [string, string]> = []
  for (const [name, value] of entries) {
    // a name or value that would break the framing is skipped, never sent (deploy-time validation is the lead's)
    if (!HEADER_NAME.test(name)) continue
    drop.add(name.toLowerCase())
    if (value === false) continue
    for (const v of Array.isArray(value) ? value : [value]) if (HEADER_VALUE.test(v)) addPairs.push([name, v])
  }
  const addLines = addPairs.map(([n, v]) => `${n}: ${v}\r\n`).join('')
  return { pristine: response.pristine, drop, addLines, addPairs }
}
