import { expect, test } from 'vitest'
import { allocateFlycastAddress, flycastOwners, inFlycastRange, parseFlycastRange } from '../flycast.js'

test('a range leaves out its network and broadcast addresses and refuses what is not an IPv4 CIDR', () => {
  expect(parseFlycastRange('127.77.0.0/16')).toEqual({ cidr: '127.77.0.0/16', first: parseFlycastRange('127.77.0.1/16').first, size: 65534 })
  expect(parseFlycastRange('10.77.3.9/30')).toMatchObject({ cidr: '10.77.3.8/30', size: 2 })
  for (const bad of ['127.77.0.0', '127.77.0.0/31', 'fdaa::/48', '300.1.1.1/16', '10.0.0.0/16/1']) {
    expect(() => parseFlycastRange(bad)).toThrow(/--flycast-range: expected an IPv4 CIDR/)
  }
  const r = parseFlycastRange('10.77.3.8/30')
  expect(['10.77.3.8', '10.77.3.9', '10.77.3.10', '10.77.3.11'].map((a) => inFlycastRange(r, a))).toEqual([false, true, true, false])
})

test('allocation is a function of the name and the taken set: every node computes the same address', () => {
  const range = parseFlycastRange('127.77.0.0/16')
  const a = allocateFlycastAddress(range, 'web', new Set())!
  expect(inFlycastRange(range, a)).toBe(true)
  expect(allocateFlycastAddress(range, 'web', new Set())).toBe(a)
  expect(allocateFlycastAddress(range, 'api', new Set())).not.toBe(a)
  // taken: the next address along the probe sequence
  const next = allocateFlycastAddress(range, 'web', new Set([a]))!
  expect(next).not.toBe(a)
  expect(allocateFlycastAddress(range, 'web', new Set([a]))).toBe(next)
})

test('a full range gives undefined; a tiny one is probed to its end', () => {
  const range = parseFlycastRange('10.9.9.0/30')
  const first = allocateFlycastAddress(range, 'a', new Set())!
  const second = allocateFlycastAddress(range, 'b', new Set([first]))!
  expect(new Set([first, second])).toEqual(new Set(['10.9.9.1', '10.9.9.2']))
  expect(allocateFlycastAddress(range, 'c', new Set([first, second]))).toBeUndefined()
})

test('two apps claiming one address: the name that sorts first owns it, whatever the order seen', () => {
  const apps = [{ name: 'zeta', flycast: '127.77.0.9' }, { name: 'alpha', flycast: '127.77.0.9' }, { name: 'mid', flycast: '127.77.0.10' }, { name: 'none' }]
  expect(flycastOwners(apps)).toEqual(new Map([['127.77.0.9', 'alpha'], ['127.77.0.10', 'mid']]))
  expect(flycastOwners([...apps].reverse())).toEqual(flycastOwners(apps))
})
