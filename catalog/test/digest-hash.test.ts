import { afterEach, expect, test, vi } from 'vitest'
import { DigestHashAccumulator, digestHashOf } from '../digest-hash.js'

afterEach(() => { vi.useRealTimers() })

test('changedAt moves when the hash takes a new value, and only then', () => {
  vi.useFakeTimers({ now: 1_000 })
  const acc = new DigestHashAccumulator()
  expect(acc.changedAt).toBe(1_000)
  vi.setSystemTime(2_000)
  acc.set('app:web', ['a1'])
  expect(acc.changedAt).toBe(2_000)
  // a commit that leaves a document at the heads it had (an op that brought nothing new) is not a change
  vi.setSystemTime(3_000)
  acc.set('app:web', ['a1'])
  acc.set('app:gone', undefined)
  expect(acc.changedAt).toBe(2_000)
  vi.setSystemTime(4_000)
  acc.set('app:web', ['a1', 'b2'])
  expect(acc.changedAt).toBe(4_000)
  expect(Buffer.from(acc.current())).toEqual(Buffer.from(digestHashOf(new Map([['app:web', ['b2', 'a1']]]))))
  vi.setSystemTime(5_000)
  acc.set('app:web', undefined)
  expect(acc.changedAt).toBe(5_000)
  expect(acc.current().every((b) => b === 0)).toBe(true)
})
