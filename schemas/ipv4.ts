/** IPv4 addresses as unsigned 32-bit integers, and CIDR ranges: Machine and Flycast address space. */

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

export function ipv4ToInt(addr: string): number | undefined {
  const m = IPV4.exec(addr)
  if (m === null) return undefined
  let n = 0
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i])
    if (octet > 255) return undefined
    n = n * 256 + octet
  }
  return n
}

export function intToIpv4(n: number): string {
  return `${Math.floor(n / 16777216) % 256}.${Math.floor(n / 65536) % 256}.${Math.floor(n / 256) % 256}.${n % 256}`
}

export interface Cidr {
  /** Network address (host bits cleared), as an unsigned integer. */
  readonly network: number
  readonly prefix: number
  /** Addresses in the range, network and broadcast included. */
  readonly span: number
  /** Normalized text, e.g. `127.66.0.0/16`. */
  readonly cidr: string
}

/** `127.66.0.0/16` → the range, or undefined when it is not an IPv4 CIDR with a prefix in [minPrefix, maxPrefix]. */
export function parseCidr(text: string, minPrefix = 8, maxPrefix = 30): Cidr | undefined {
  const [addr, bits, extra] = text.trim().split('/')
  const prefix = Number(bits)
  const base = ipv4ToInt(addr ?? '')
  if (base === undefined || extra !== undefined || bits === undefined || !Number.isInteger(prefix) || prefix < minPrefix || prefix > maxPrefix) return undefined
  const span = 2 ** (32 - prefix)
  const network = base - (base % span)
  return { network, prefix, span, cidr: `${intToIpv4(network)}/${prefix}` }
}
