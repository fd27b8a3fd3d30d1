import * as A from '@automerge/automerge'
import { expect, test } from 'vitest'
import { readChangeHeader } from '../change-header.js'

test('a change\'s hash, dependency count and actor read from its header match what decoding the change gives', () => {
  let doc = A.init<Record<string, unknown>>({ actor: 'aabb' })
  doc = A.change(doc, (d) => { d.a = 1 })
  doc = A.change(doc, (d) => { d.big = new A.ImmutableString('y'.repeat(5000)) })
  const other = A.change(A.clone(doc, { actor: 'ccdd' }), (d) => { d.b = 2 })
  doc = A.change(A.merge(doc, other), (d) => { d.c = 3 }) // two dependencies
  const changes = A.getAllChanges(doc)
  expect(changes.map((c) => A.decodeChange(c).deps.length)).toContain(2)
  expect(new Set(changes.map((c) => A.decodeChange(c).actor))).toEqual(new Set(['aabb', 'ccdd']))
  for (const c of changes) {
    const decoded = A.decodeChange(c)
    expect(readChangeHeader(c)).toEqual({ hash: decoded.hash, deps: decoded.deps.length, actor: decoded.actor })
  }
})

test('bytes that are not an uncompressed change chunk give no header (the caller decodes them instead)', () => {
  const [change] = A.getAllChanges(A.change(A.init<Record<string, unknown>>(), (d) => { d.a = 1 }))
  const flipped = Uint8Array.from(change)
  flipped[flipped.length - 1] ^= 1 // the body no longer matches the checksum
  expect(readChangeHeader(flipped)).toBeUndefined()
  expect(readChangeHeader(change.subarray(0, change.length - 1))).toBeUndefined()
  expect(readChangeHeader(new Uint8Array([1, 2, 3, 4]))).toBeUndefined()
  expect(readChangeHeader(new Uint8Array(64))).toBeUndefined()
})
