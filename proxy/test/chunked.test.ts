import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { CHUNKED_ERROR, CHUNKED_MORE, ChunkedScanner, encodeChunk, LAST_CHUNK } from '../http/chunked.js'

function scanAll(parts: Buffer[]): { end: number; offsetInPart: number; data: string } | 'error' | 'more' {
  const s = new ChunkedScanner()
  let data = ''
  for (let i = 0; i < parts.length; i++) {
    const r = s.scan(parts[i], 0, parts[i].length, (b, st, e) => { data += b.toString('latin1', st, e) })
    if (r === CHUNKED_ERROR) return 'error'
    if (r !== CHUNKED_MORE) return { end: i, offsetInPart: r, data }
  }
  return 'more'
}

function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b)
  const parts: Buffer[] = []
  let prev = 0
  for (const p of points) { parts.push(buf.subarray(prev, p)); prev = p }
  parts.push(buf.subarray(prev))
  return parts.filter((p) => p.length > 0)
}

describe('ChunkedScanner', () => {
  test('finds the end of a body however the bytes are split, and decodes the payload', () => {
    fc.assert(fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 40 }), { maxLength: 6 }),
      fc.array(fc.nat(), { maxLength: 8 }),
      fc.boolean(),
      (chunks, cuts, trailer) => {
        const body = Buffer.concat([
          ...chunks.map((c) => encodeChunk(Buffer.from(c))),
          trailer ? Buffer.from('0\r\nX-Check: 1\r\n\r\n') : LAST_CHUNK,
        ])
        const next = Buffer.from('GET /next HTTP/1.1\r\n')
        const all = Buffer.concat([body, next])
        const r = scanAll(split(all, cuts))
        expect(r).not.toBe('error')
        expect(r).not.toBe('more')
        const parts = split(all, cuts)
        const { end, offsetInPart, data } = r as { end: number; offsetInPart: number; data: string }
        const consumed = parts.slice(0, end).reduce((n, p) => n + p.length, 0) + offsetInPart
        expect(consumed).toBe(body.length)
        expect(data).toBe(Buffer.concat(chunks.map((c) => Buffer.from(c))).toString('latin1'))
      },
    ))
  })

  test('accepts chunk extensions and upper-case hex', () => {
    expect(scanAll([Buffer.from('A;name=value\r\n0123456789\r\n0\r\n\r\n')])).toMatchObject({ data: '0123456789' })
  })

  test.each([
    ['a size that is not hex', 'zz\r\nab\r\n0\r\n\r\n'],
    ['a bare LF after the size', '2\nab\r\n0\r\n\r\n'],
    ['a missing CRLF after the data', '2\r\nabc\r\n0\r\n\r\n'],
    ['a negative size', '-2\r\nab\r\n0\r\n\r\n'],
    ['a space before the size', ' 2\r\nab\r\n0\r\n\r\n'],
    ['a size too large to be real', 'fffffffffffffff\r\n'],
  ])('rejects %s', (_name, text) => {
    expect(scanAll([Buffer.from(text)])).toBe('error')
  })
})
