/**
 * Maps the dotted path of each key in a TOML text to the line it is written on, so that a schema error can
 * say "(line 14)". TOML parsers give positions only for syntax errors; this scan covers tables, arrays of
 * tables and `key = value` lines, which is where fly.toml errors live. Values inside inline tables fall
 * back to the line of the key that holds them.
 */
export type PathKey = string

export function pathKey(path: ReadonlyArray<PropertyKey>): PathKey {
  return path.map(String).join('.')
}

function splitDottedKey(text: string): string[] {
  const parts: string[] = []
  let current = ''
  let quote: string | undefined
  for (const ch of text.trim()) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined
      else current += ch
    } else if (ch === '"' || ch === "'") {
      quote = ch
    } else if (ch === '.') {
      parts.push(current.trim())
      current = ''
    } else {
      current += ch
    }
  }
  parts.push(current.trim())
  return parts
}

export function tomlLineIndex(text: string): Map<PathKey, number> {
  const lines = new Map<PathKey, number>()
  const arrayLengths = new Map<PathKey, number>()
  let table: string[] = []
  let inMultiline: string | undefined

  // `[[services.ports]]` extends the last `[[services]]` element: resolve each dotted prefix through the
  // arrays already seen.
  const resolve = (keys: string[]): string[] => {
    const out: string[] = []
    for (const k of keys) {
      out.push(k)
      const n = arrayLengths.get(pathKey(out))
      if (n !== undefined) out.push(String(n - 1))
    }
    return out
  }

  text.split(/\r?\n/).forEach((raw, i) => {
    const lineNo = i + 1
    const line = raw.trim()
    if (inMultiline !== undefined) {
      if (line.includes(inMultiline)) inMultiline = undefined
      return
    }
    if (line === '' || line.startsWith('#')) return
    const arrayHeader = /^\[\[\s*(.+?)\s*\]\]/.exec(line)
    if (arrayHeader) {
      const keys = splitDottedKey(arrayHeader[1])
      const parent = resolve(keys.slice(0, -1))
      const arrayPath = [...parent, keys[keys.length - 1]]
      const n = (arrayLengths.get(pathKey(arrayPath)) ?? 0) + 1
      arrayLengths.set(pathKey(arrayPath), n)
      table = [...arrayPath, String(n - 1)]
      if (!lines.has(pathKey(arrayPath))) lines.set(pathKey(arrayPath), lineNo)
      lines.set(pathKey(table), lineNo)
      return
    }
    const tableHeader = /^\[\s*(.+?)\s*\]/.exec(line)
    if (tableHeader) {
      table = resolve(splitDottedKey(tableHeader[1]))
      lines.set(pathKey(table), lineNo)
      return
    }
    const eq = line.indexOf('=')
    if (eq <= 0) return
    const keyPath = [...table, ...splitDottedKey(line.slice(0, eq))]
    lines.set(pathKey(keyPath), lineNo)
    const value = line.slice(eq + 1)
    for (const delim of ['"""', "'''"]) {
      const first = value.indexOf(delim)
      if (first !== -1 && value.indexOf(delim, first + 3) === -1) inMultiline = delim
    }
  })
  return lines
}

/** The line of the deepest written key on `path`, if any. */
export function lineOf(index: Map<PathKey, number>, path: ReadonlyArray<PropertyKey>): number | undefined {
  for (let n = path.length; n > 0; n--) {
    const line = index.get(pathKey(path.slice(0, n)))
    if (line !== undefined) return line
  }
  return undefined
}
