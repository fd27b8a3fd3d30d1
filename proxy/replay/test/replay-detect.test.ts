import { expect, test } from 'vitest'
import { NO_EDITS } from '../../http/response-edits.js'
import { parseResponseHead, type ResponseHead } from '../../http/response-head.js'

function head(lines: string): ResponseHead {
  const buf = Buffer.from(`HTTP/1.1 200 OK\r\n${lines}\r\n`, 'latin1')
  const r = parseResponseHead(buf, 0, buf.length, false, NO_EDITS)
  if (r instanceof Error) throw r
  return r
}

test('the JSON form is recognised by its content type, however it is spelled, and nothing else is', () => {
  for (const v of ['application/vnd.fly.replay+json', 'Application/VND.Fly.Replay+JSON', '  application/vnd.fly.replay+json ; charset=utf-8', '\tapplication/vnd.fly.replay+json;v=1']) {
    expect(head(`Content-Type:${v}\r\nContent-Length: 2\r\n`).replayJson).toBe(true)
  }
  for (const v of ['application/json', 'text/html', 'application/vnd.fly.replay+jsonx', 'application/vnd.fly.replay', 'application/vnd.other+json']) {
    expect(head(`Content-Type: ${v}\r\nContent-Length: 2\r\n`).replayJson).toBe(false)
  }
  expect(head('X-Content-Typ: application/vnd.fly.replay+json\r\n').replayJson).toBe(false)
})

test('fly-replay and every fly-replay-* response header are held back from the client', () => {
  const r = head('fly-replay: region=iad\r\nFly-Replay-Cache: /x/*\r\nfly-replay-cache-ttl-secs: 10\r\nX-Kept: yes\r\n')
  expect(r.replay).toBe('region=iad')
  expect(r.lines).toBe('X-Kept: yes\r\n')
  expect(head('X-Kept: yes\r\n').replay).toBeUndefined()
})
