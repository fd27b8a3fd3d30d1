import * as A from '@automerge/automerge'

/**
 * Automerge 3 turns every JS string into a collaborative Text object, which costs memory and merges
 * character by character. Catalog values are last-writer-wins facts, so strings are stored as
 * ImmutableString and whole structured values (a fly.toml config, a Machine spec) as one JSON string.
 */
export function str(value: string): A.ImmutableString {
  return new A.ImmutableString(value)
}

export function json(value: unknown): A.ImmutableString {
  return new A.ImmutableString(JSON.stringify(value))
}

/** Reads back a value written by str(); tolerates a plain string (e.g. a peer on another version). */
export function readStr(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined
  if (typeof value === 'string') return value
  if (A.isImmutableString(value)) return value.val
  return undefined
}

export function readJson(value: unknown): unknown {
  const s = readStr(value)
  if (s === undefined) return undefined
  return JSON.parse(s)
}

export function readNum(value: unknown): number | undefined {
  return typeof value === 'number' ? value : undefined
}

export function readBool(value: unknown): boolean | undefined {
  return typeof value === 'boolean' ? value : undefined
}

/** Actor ids carry the node name so that events can name the node a change came from. */
export function actorFor(nodeName: string, random: Uint8Array): string {
  return Buffer.from(nodeName, 'utf8').toString('hex') + '00' + Buffer.from(random).toString('hex')
}

export function nodeOfActor(actor: string): string {
  // node names are [a-z0-9-], whose UTF-8 bytes never contain 0x00: the first 00 byte ends the name
  for (let i = 0; i + 1 < actor.length; i += 2) {
    if (actor[i] === '0' && actor[i + 1] === '0') return i === 0 ? 'unknown' : Buffer.from(actor.slice(0, i), 'hex').toString('utf8')
  }
  return 'unknown'
}
