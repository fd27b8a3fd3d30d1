import type { ClientInfo } from '../proxy-context.js'

/**
 * Request headers the http handler adds (FLY-SPEC §7). The part that is the same for every request of a
 * connection is rendered once per connection; X-Forwarded-For, X-Forwarded-Port and Fly-Request-Id are
 * added per request.
 */
export function connectionHeaderLines(client: ClientInfo, region: string, via: string): string {
  const proto = client.tls ? 'https' : 'http'
  return `X-Forwarded-Proto: ${proto}\r\n`
    + `X-Forwarded-SSL: ${client.tls ? 'on' : 'off'}\r\n`
    + `Fly-Client-IP: ${client.ip}\r\n`
    + `Fly-Forwarded-Port: ${client.localPort}\r\n`
    + `Fly-Region: ${region}\r\n`
    + `Via: ${via} fly.io\r\n`
}

/** The same headers as name/value pairs, for requests built from HTTP/2 streams. */
export function forwardHeaderPairs(client: ClientInfo, region: string, via: string, forwardedFor: string | undefined,
  publicPort: number, requestId: string): Array<[string, string]> {
  return [
    ['x-forwarded-for', forwardedFor === undefined ? client.ip : `${forwardedFor}, ${client.ip}`],
    ['x-forwarded-proto', client.tls ? 'https' : 'http'],
    ['x-forwarded-ssl', client.tls ? 'on' : 'off'],
    ['x-forwarded-port', String(publicPort)],
    ['fly-client-ip', client.ip],
    ['fly-forwarded-port', String(client.localPort)],
    ['fly-region', region],
    ['fly-request-id', requestId],
    ['via', `${via} fly.io`],
  ]
}

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is shown as the IPv4 address it is. */
export function plainIp(address: string | undefined): string {
  if (address === undefined) return ''
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}
