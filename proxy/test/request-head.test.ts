import { describe, expect, test } from 'vitest'
import { EdgeProxyError } from '../../schemas/errors.js'
import { DEFAULT_HTTP_LIMITS } from '../http/limits.js'
import { BODY_CHUNKED, BODY_LENGTH, findHeadEnd, HEAD_BARE_LF, HEAD_INCOMPLETE, hostOnly, parseRequestHead, type RequestHead } from '../http/request-head.js'

function parse(text: string): RequestHead | EdgeProxyError {
  const buf = Buffer.from(text, 'latin1')
  const end = findHeadEnd(buf, 0)
  if (end < 0) throw new Error(`head not complete: ${end}`)
  return parseRequestHead(buf, 0, end, DEFAULT_HTTP_LIMITS)
}

describe('request head parsing', () => {
  test('keeps ordinary lines as they are and drops hop-by-hop and proxy-owned ones', () => {
    const head = parse('GET /a?b=1 HTTP/1.1\r\nHost: Web.Example.COM:8080\r\nAccept: */*\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n'
      + 'Keep-Alive: timeout=5\r\nX-Forwarded-Proto: https\r\nFly-Client-IP: 6.6.6.6\r\nfly-prefer-region: iad, ord\r\nUser-Agent: t\r\n\r\n') as RequestHead
    expect(head.method).toBe('GET')
    expect(head.target).toBe('/a?b=1')
    expect(head.host).toBe('web.example.com')
    expect(head.keepAlive).toBe(true)
    expect(head.lines).toBe('Host: Web.Example.COM:8080\r\nAccept: */*\r\nUser-Agent: t\r\n')
    expect(head.hints).toEqual({ preferRegions: ['iad', 'ord'] })
  })

  test('joins X-Forwarded-For lines and notes a client X-Forwarded-Port', () => {
    const head = parse('GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Port: 443\r\n\r\n') as RequestHead
    expect(head.forwardedFor).toBe('1.1.1.1, 2.2.2.2')
    expect(head.hasForwardedPort).toBe(true)
  })

  test('frames bodies by Content-Length or chunked', () => {
    expect(parse('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n')).toMatchObject({ bodyKind: BODY_LENGTH, contentLength: 12 })
    expect(parse('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n')).toMatchObject({ bodyKind: BODY_CHUNKED })
  })

  test('HTTP/1.0 defaults to close, keep-alive only when asked', () => {
    expect(parse('GET / HTTP/1.0\r\n\r\n')).toMatchObject({ keepAlive: false, minor: 0, host: '' })
    expect(parse('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n')).toMatchObject({ keepAlive: true })
  })

  test('absolute-form targets use their authority', () => {
    expect(parse('GET http://other.test:81/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n')).toMatchObject({ host: 'other.test', target: '/x?y' })
  })

  test.each([
    ['Content-Length with Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['two Content-Length headers', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n'],
    ['a Content-Length list', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n'],
    ['a non-numeric Content-Length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n'],
    ['a Transfer-Encoding other than chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'],
    ['Transfer-Encoding in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['a space before the colon', 'GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n'],
    ['obsolete line folding', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n'],
    ['a bare CR', 'GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n'],
    ['a NUL byte', 'GET / HTTP/1.1\r\nHost: a\0\r\n\r\n'],
    ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
    ['no Host in HTTP/1.1', 'GET / HTTP/1.1\r\nAccept: */*\r\n\r\n'],
    ['a malformed request line', 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n'],
  ])('rejects %s with 400', (_name, text) => {
    const r = parse(text)
    expect(r).toBeInstanceOf(EdgeProxyError)
    expect((r as EdgeProxyError).code).toBe('EP_BAD_REQUEST')
  })

  test('unknown HTTP versions get 505', () => {
    expect((parse('GET / HTTP/2.0\r\nHost: a\r\n\r\n') as EdgeProxyError).code).toBe('EP_HTTP_VERSION')
  })

  test('finds the end of a head and refuses bare LF line ends', () => {
    expect(findHeadEnd(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY'), 0)).toBe(27)
    expect(findHeadEnd(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n'), 0)).toBe(HEAD_INCOMPLETE)
    expect(findHeadEnd(Buffer.from('GET / HTTP/1.1\nHost: a\n\n'), 0)).toBe(HEAD_BARE_LF)
  })

  test('host names lose port and case', () => {
    expect(hostOnly('Example.com:443')).toBe('example.com')
    expect(hostOnly('[::1]:8080')).toBe('[::1]')
    expect(hostOnly('example.com.')).toBe('example.com')
  })
})
