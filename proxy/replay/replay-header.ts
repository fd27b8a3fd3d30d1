import { TCHAR } from '../http/token-table.js'

const SP = 0x20
const TAB = 0x09
const DQUOTE = 0x22
const SEMI = 0x3b
const EQ = 0x3d
const COMMA = 0x2c
const BACKSLASH = 0x5c

function isOws(c: number): boolean { return c === SP || c === TAB }

/**
 * Splits a `fly-replay` value into its fields (FLY-SPEC §6):
 *
 *     fly-replay = field *( ";" field )
 *     field      = key "=" ( token / quoted-string )
 *
 * Whitespace around `;` and `=` is allowed. An unquoted value may hold any visible character but `;`, `,`
 * and `"`; a list (`region="iad,ord"`) must be quoted, because a comma splits header values. Keys are
 * lower-cased; a key given twice is an error. Returns the fields, or a message saying what is wrong.
 */
export function splitReplayHeader(value: string): Record<string, string> | string {
  const fields: Record<string, string> = {}
  const n = value.length
  let i = 0
  let count = 0
  for (;;) {
    while (i < n && isOws(value.charCodeAt(i))) i++
    if (i === n) break
    const keyStart = i
    while (i < n && value.charCodeAt(i) < 128 && TCHAR[value.charCodeAt(i)] === 1) i++
    const key = value.slice(keyStart, i).toLowerCase()
    if (key === '') return `expected a field name at offset ${keyStart}`
    while (i < n && isOws(value.charCodeAt(i))) i++
    if (value.charCodeAt(i) !== EQ) return `field "${key}" has no "=value"`
    i++
    while (i < n && isOws(value.charCodeAt(i))) i++
    let v: string
    if (value.charCodeAt(i) === DQUOTE) {
      i++
      v = ''
      let closed = false
      while (i < n) {
        const c = value.charCodeAt(i)
        if (c === DQUOTE) { closed = true; i++; break }
        if (c === BACKSLASH && i + 1 < n) { v += value[i + 1]; i += 2; continue }
        v += value[i]
        i++
      }
      if (!closed) return `the quoted value of "${key}" is not closed`
    } else {
      const start = i
      while (i < n) {
        const c = value.charCodeAt(i)
        if (c === SEMI || isOws(c)) break
        if (c === COMMA) return `the value of "${key}" holds a comma: quote a list, e.g. ${key}="${value.slice(start).split(';')[0].trim()}"`
        if (c === DQUOTE || c < 0x21 || c === 0x7f) return `the value of "${key}" has an invalid character`
        i++
      }
      v = value.slice(start, i)
      if (v === '') return `field "${key}" has an empty value`
    }
    if (Object.hasOwn(fields, key)) return `field "${key}" is given twice`
    fields[key] = v
    count++
    while (i < n && isOws(value.charCodeAt(i))) i++
    if (i === n) break
    if (value.charCodeAt(i) !== SEMI) return `expected ";" after field "${key}"`
    i++
  }
  if (count === 0) return 'it is empty'
  return fields
}
