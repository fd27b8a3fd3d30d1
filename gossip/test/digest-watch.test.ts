import { afterEach, beforeEach, expect, test, vi } from 'vitest'
import { DigestWatch } from '../digest-watch.js'

/** Time is the only thing mocked: which peers count as gone together depends on when they disconnected. */
beforeEach(() => { vi.useFakeTimers({ toFake: ['performance'] }) })
afterEach(() => { vi.useRealTimers() })

const hash = (b: number): Uint8Array => new Uint8Array(32).fill(b)

test('peers that disconnected together are taken for one event until a session levels them; a peer lost long apart is not', () => {
  const watch = new DigestWatch(() => hash(1), 10_000)
  // a partition takes iad and ord within a second; syd is lost a minute later, by itself
  watch.forget('iad')
  vi.advanceTimersByTime(800)
  watch.forget('ord')
  vi.advanceTimersByTime(60_000)
  watch.forget('syd')
  expect(watch.awayTogether('iad', 'ord')).toBe(true)
  expect(watch.awayTogether('ord', 'syd')).toBe(false)
  // a peer that flaps while away is still away since its first disconnect
  watch.forget('iad')
  expect(watch.awayTogether('iad', 'ord')).toBe(true)
  // once a session leaves iad level, it is no longer one of the returning group
  watch.level('iad')
  expect(watch.awayTogether('iad', 'ord')).toBe(false)
  // a peer never disconnected is away with nobody
  expect(watch.awayTogether('ams', 'ord')).toBe(false)
})

test('a peer back from being away is reported as just returned for a while, until a session levels it', () => {
  const watch = new DigestWatch(() => hash(1), 10_000)
  watch.connected('iad')
  expect(watch.justReturned('iad', 3000)).toBe(false) // first connect: it was never away
  watch.forget('iad')
  vi.advanceTimersByTime(30_000)
  watch.connected('iad')
  expect(watch.justReturned('iad', 3000)).toBe(true)
  vi.advanceTimersByTime(3001)
  expect(watch.justReturned('iad', 3000)).toBe(false)
  watch.forget('iad')
  watch.connected('iad')
  watch.level('iad')
  expect(watch.justReturned('iad', 3000)).toBe(false)
})

test('last known hashes survive a disconnect; what a peer currently reports does not', () => {
  const watch = new DigestWatch(() => hash(1), 10_000)
  watch.heard('iad', hash(2))
  watch.forget('iad')
  expect(watch.reportedBy('iad')).toBeUndefined()
  expect(watch.lastKnown('iad')).toBe(Buffer.from(hash(2)).toString('hex'))
})
