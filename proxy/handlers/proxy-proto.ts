import { isIPv4, isIPv6 } from 'node:net'
import {
  Command, INETProtocol, IPv4Address, IPv4ProxyAddress, IPv6Address, IPv6ProxyAddress, Peer, TransportProtocol, V1ProxyProtocol,
  V2ProxyProtocol,
} from 'proxy-protocol-js'

export interface ProxyProtoEndpoints {
  sourceIp: string
  sourcePort: number
  destIp: string
  destPort: number
}

/**
 * The PROXY protocol header written to the Machine before the client's first byte (FLY-SPEC §7):
 * source = the client, destination = the address and port the client dialled. v1 is text, v2 binary.
 */
export function proxyProtocolHeader(version: 'v1' | 'v2', e: ProxyProtoEndpoints): Buffer {
  const v4 = isIPv4(e.sourceIp) && isIPv4(e.destIp)
  if (version === 'v1') {
    if (!v4 && !(isIPv6(e.sourceIp) && isIPv6(e.destIp))) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1')
    // IPv6 in canonical text (RFC 5952): any valid spelling that reaches us (uncompressed, an IPv4 tail, a
    // zone id — a worker takes these from a backhaul OPEN) would otherwise be copied as is and can push the
    // line past the spec's 107 bytes, which strict receivers drop (issue 11 item 11)
    const src = v4 ? e.sourceIp : ipv6Text(ipv6Bytes(e.sourceIp))
    const dst = v4 ? e.destIp : ipv6Text(ipv6Bytes(e.destIp))
    const proto = new V1ProxyProtocol(v4 ? INETProtocol.TCP4 : INETProtocol.TCP6, new Peer(src, e.sourcePort), new Peer(dst, e.destPort))
    return Buffer.from(proto.build(), 'latin1')
  }
  const address = v4
    ? new IPv4ProxyAddress(IPv4Address.createFrom(ipv4Bytes(e.sourceIp)), e.sourcePort, IPv4Address.createFrom(ipv4Bytes(e.destIp)), e.destPort)
    : new IPv6ProxyAddress(IPv6Address.createFrom(ipv6Bytes(e.sourceIp)), e.sourcePort, IPv6Address.createFrom(ipv6Bytes(e.destIp)), e.destPort)
  return Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM, address).build())
}

/** RFC 5952 text of 16 address bytes: lower-case hex, no leading zeros, the longest run of ≥ 2 zero groups as `::`. */
export function ipv6Text(bytes: number[]): string {
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[i * 2] << 8) | bytes[i * 2 + 1]).toString(16))
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue }
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > bestLen) { best = i; bestLen = j - i }
    i = j
  }
  if (best === -1) return groups.join(':')
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`
}

function ipv4Bytes(ip: string): number[] {
  return ip.split('.').map(Number)
}

/** 16 bytes of an IPv6 address (`::` compression and a trailing dotted IPv4 allowed); IPv4 becomes ::ffff:a.b.c.d. */
export function ipv6Bytes(ip: string): number[] {
  if (isIPv4(ip)) return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...ipv4Bytes(ip)]
  const zone = ip.indexOf('%')
  const addr = zone === -1 ? ip : ip.slice(0, zone)
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined]
  const groups = (s: string | undefined): number[] => {
    if (s === undefined || s === '') return []
    const out: number[] = []
    for (const part of s.split(':')) {
      if (part.includes('.')) {
        const b = ipv4Bytes(part)
        out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3])
      } else out.push(parseInt(part, 16))
    }
    return out
  }
  const h = groups(head)
  const t = groups(tail)
  const all = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t]
  return all.flatMap((g) => [g >> 8, g & 0xff])
}
