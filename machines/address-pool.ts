import { EdgeProxyError } from '../schemas/errors.js'

/** Default loopback range for Machine addresses: one IP per Machine, like a Fly VM's private address. */
export const DEFAULT_MACHINE_RANGE = '127.66.0.0/16'

export interface Ipv4Range {
  /** First address as a 32-bit unsigned integer. */
  readonly base: number
  readonly size: number
  readonly cidr: string
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

export function ipv4ToInt(ip: string): number | undefined {
  const m = IPV4.exec(ip)
  if (m === null) return undefined
  const octets = m.slice(1).map(Number)
  if (octets.some((o) => o > 255)) return undefined
  return ((octets[0] << 24) >>> 0) + (octets[1] << 16) + (octets[2] << 8) + octets[3]
}

export function intToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
}

/**
 * Parses `127.66.0.0/16`. Only 127.0.0.0/8 may receive traffic on a node (DEVELOPERS.md), and every
 * address in it routes to the loopback interface on Linux, so a Machine can bind its own IP without setup.
 */
export function parseMachineRange(cidr: string): Ipv4Range {
  const [ip, bitsText, extra] = cidr.split('/')
  const start = ipv4ToInt(ip ?? '')
  const bits = Number(bitsText)
  if (extra !== undefined || start === undefined || !Number.isInteger(bits) || bits < 8 || bits > 30) {
    throw new EdgeProxyError('EP_INVALID_CONFIG', `machine address range "${cidr}" must be an IPv4 CIDR such as "127.66.0.0/16" (prefix 8–30)`, { path: 'machineRange' })
  }
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  const base = (start & mask) >>> 0
  if (base >>> 24 !== 127) {
    throw new EdgeProxyError('EP_INVALID_CONFIG', `machine address range "${cidr}" must lie inside 127.0.0.0/8 (loopback)`, { path: 'machineRange' })
  }
  return { base, size: 2 ** (32 - bits), cidr: `${intToIpv4(base)}/${bits}` }
}

/**
 * Hands out one loopback IP per Machine of this node. The network and broadcast addresses of the range are
 * never used (some tools treat them specially). Allocation is sequential from a cursor so a released
 * address is not reused at once: a late packet or log line for a destroyed Machine never reaches a new one.
 */
export class AddressPool {
  private readonly range: Ipv4Range
  private readonly owners = new Map<number, string>()
  private readonly byMachine = new Map<string, number>()
  private cursor = 1

  constructor(cidr: string = DEFAULT_MACHINE_RANGE) {
    this.range = parseMachineRange(cidr)
  }

  get cidr(): string { return this.range.cidr }
  get used(): number { return this.byMachine.size }

  contains(ip: string): boolean {
    const n = ipv4ToInt(ip)
    return n !== undefined && n > this.range.base && n < this.range.base + this.range.size - 1
  }

  addressOf(machineId: string): string | undefined {
    const n = this.byMachine.get(machineId)
    return n === undefined ? undefined : intToIpv4(n)
  }

  /**
   * Gives the Machine its previous address when that is still free and inside the range (a restart keeps
   * its privateAddr), otherwise the next free one.
   */
  acquire(machineId: string, preferred?: string): string {
    const held = this.byMachine.get(machineId)
    if (held !== undefined) return intToIpv4(held)
    if (preferred !== undefined && this.contains(preferred)) {
      const n = ipv4ToInt(preferred) as number
      if (!this.owners.has(n)) return this.take(machineId, n)
    }
    const usable = this.range.size - 2
    for (let i = 0; i < usable; i++) {
      const offset = ((this.cursor - 1 + i) % usable) + 1
      const n = this.range.base + offset
      if (!this.owners.has(n)) {
        this.cursor = (offset % usable) + 1
        return this.take(machineId, n)
      }
    }
    throw new EdgeProxyError('EP_MACHINE_ADDRESS_EXHAUSTED', `all ${usable} addresses of ${this.range.cidr} are in use; configure a larger machine address range`)
  }

  release(machineId: string): void {
    const n = this.byMachine.get(machineId)
    if (n === undefined) return
    this.byMachine.delete(machineId)
    this.owners.delete(n)
  }

  private take(machineId: string, n: number): string {
    this.owners.set(n, machineId)
    this.byMachine.set(machineId, n)
    return intToIpv4(n)
  }
}
