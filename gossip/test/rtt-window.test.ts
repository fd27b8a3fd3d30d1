import { expect, test } from 'vitest'
import { RttWindow } from '../rtt-window.js'

test('a ping delayed by a busy moment does not move a peer farther away', () => {
  const near = new RttWindow(6, 41)
  near.add(40)
  near.add(520) // both ends' event loops were busy for this one
  expect(near.value).toBe(40)
  const far = new RttWindow(6, 121)
  // the near peer still ranks ahead of the far one, whose pings were all quiet
  expect(near.value).toBeLessThan(far.value)
})

test('a route that really got longer shows once its shorter pings have left the window', () => {
  const w = new RttWindow(3, 40)
  w.add(120)
  w.add(121)
  expect(w.value).toBe(40)
  w.add(122)
  expect(w.value).toBe(120)
  w.add(119)
  expect(w.value).toBe(119)
})

test('a shorter route shows at its first ping', () => {
  const w = new RttWindow(6, 120)
  w.add(118)
  w.add(40)
  expect(w.value).toBe(40)
})

test('a window must hold at least one ping', () => {
  expect(() => new RttWindow(0, 10)).toThrow(/positive integer, got 0/)
})
