import { expect, test } from 'vitest'
import { toDirective } from '../replay-directive.js'
import { splitReplayHeader } from '../replay-header.js'
import { fieldValue, replayFailedLine, replaySrcLine } from '../replay-lines.js'

test('the header grammar: fields split on ";", quoted lists, escapes and whitespace around separators', () => {
  expect(splitReplayHeader('region=iad')).toEqual({ region: 'iad' })
  expect(splitReplayHeader('region="iad,ord"; app=api ;Instance = 0a1b2c3d4e5f60')).toEqual({ region: 'iad,ord', app: 'api', instance: '0a1b2c3d4e5f60' })
  expect(splitReplayHeader('state="a \\"quoted\\" ;value";elsewhere=true')).toEqual({ state: 'a "quoted" ;value', elsewhere: 'true' })
  expect(splitReplayHeader('state=user:42/x;timeout=5s')).toEqual({ state: 'user:42/x', timeout: '5s' })
})

test('the header grammar refuses what it cannot read, saying why', () => {
  expect(splitReplayHeader('region=iad,ord')).toMatch(/holds a comma: quote a list, e\.g\. region="iad,ord"/)
  expect(splitReplayHeader('region')).toMatch(/has no "=value"/)
  expect(splitReplayHeader('region=iad;region=ord')).toMatch(/given twice/)
  expect(splitReplayHeader('state="open')).toMatch(/not closed/)
  expect(splitReplayHeader('region=iad app=x')).toMatch(/expected ";"/)
  expect(splitReplayHeader('  ')).toBe('it is empty')
  expect(splitReplayHeader('region=')).toMatch(/empty value/)
})

test('directive fields: lists, aliases, booleans, durations and Machine ids are checked with the field named', () => {
  const d = toDirective({ region: 'IAD, eu ,any', instance: '0A1B2C3D4E5F60', elsewhere: 'true', timeout: '1m30s', fallback: 'prefer_self', state: 's' })
  expect(d).toEqual({ region: ['iad', 'eu', 'any'], instance: '0a1b2c3d4e5f60', elsewhere: true, timeout: 90_000, fallback: 'prefer_self', state: 's' })
  expect(toDirective({ region: ['iad', 'ord'], elsewhere: false })).toEqual({ region: ['iad', 'ord'], elsewhere: false })
  expect(toDirective({ regoin: 'iad' })).toBe('(root): Unrecognized key: "regoin"')
  expect(toDirective({ instance: 'xyz' })).toMatch(/^instance: must be 14 lowercase hex digits/)
  expect(toDirective({ fallback: 'self' })).toMatch(/^fallback: /)
  expect(toDirective({ timeout: 'soon' })).toMatch(/^timeout: expected a duration/)
  expect(toDirective({ region: 'i a d' })).toMatch(/^region: "i a d" is not a region code/)
  expect(toDirective({ transform: { set_headers: [{ name: 'content-length', value: '1' }] } })).toMatch(/transform\.set_headers\.0\.name: cannot be changed/)
  expect(toDirective({ transform: { delete_headers: ['Host'] } })).toMatch(/Host cannot be deleted/)
  expect(toDirective({ state: 'a\r\nx: y' })).toMatch(/^state: must not contain CR, LF or NUL/)
})

test('fly-replay-src and fly-replay-failed are written in the same grammar, quoting where needed', () => {
  expect(replaySrcLine('0a1b2c3d4e5f60', 'ams', 1700000000000000, undefined)).toBe('fly-replay-src: instance=0a1b2c3d4e5f60;region=ams;t=1700000000000000\r\n')
  expect(replaySrcLine('0a1b2c3d4e5f60', 'ams', 1, 'cart=42;x')).toBe('fly-replay-src: instance=0a1b2c3d4e5f60;region=ams;t=1;state="cart=42;x"\r\n')
  expect(fieldValue('say "hi"')).toBe('"say \\"hi\\""')
  expect(replayFailedLine({ instance: undefined, app: 'web', regions: ['iad', 'ord'], source: '0a1b2c3d4e5f60', reason: 'no_candidate', elapsedMs: 3.4 }))
    .toBe('fly-replay-failed: app=web;region="iad,ord";replay_source=0a1b2c3d4e5f60;reason=no_candidate;elapsed_ms=3\r\n')
})
