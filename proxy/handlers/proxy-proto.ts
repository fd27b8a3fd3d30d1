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
    const proto = new V1ProxyProtocol(v4 ? INETProtocol.TCP4 : INETProtocol.TCP6, new Peer(e.sourceIp, e.sourcePort), new Peer(e.destIp, e.destPort))
    return Buffer.from(proto.build(), 'latin1')
  }
  const address = v4
    ? new IPv4ProxyAddress(IPv4Address.createFrom(ipv4Bytes(e.sourceIp)), e.sourcePort, IPv4Address.createFrom(ipv4Bytes(e.destIp)), e.destPort)
    : new IPv6ProxyAddress(IPv6Address.createFrom(ipv6Bytes(e.sourceIp)), e.sourcePort, IPv6Address.createFrom(ipv6Bytes(e.destIp)), e.destPort)
  return Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM, address).build())
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
