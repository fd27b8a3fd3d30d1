/** RFC 9110 §5.6.2 tchar, as a lookup table: header names and methods must be made of these. */
export const TCHAR = new Uint8Array(128)
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1

export function isToken(s: string, start: number, end: number): boolean {
  if (end <= start) return false
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i)
    if (c > 127 || TCHAR[c] === 0) return false
  }
  return true
}

/** ASCII case-insensitive compare of s[start, start+lower.length) with a lower-case token. */
export function equalsLower(s: string, start: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    // | 0x20 folds A-Z onto a-z and leaves '-' and digits alone: enough for the token names compared here
    if ((s.charCodeAt(start + k) | 0x20) !== lower.charCodeAt(k)) return false
  }
  return true
}
