import { EdgeProxyError } from '../schemas/errors.js'
import { intToIpv4, ipv4ToInt, parseCidr } from '../schemas/ipv4.js'

/** Default loopback range for Machine addresses: one IP per Machine, like a Fly VM's private address. */
export const DEFAULT_MACHINE_RANGE = '127.66.0.0/16'

export interface Ipv4Range {
  /** First address as a 32-bit unsigned integer. */
  readonly base: number
  readonly size: number
  readonly cidr: string
}

/**
 * Parses `127.66.0.0/16`. Only 127.0.0.0/8 may receive traffic on a node (DEVELOPERS.md), and every
 * address in it routes to the loopback interface on Linux, so a Machine can bind its own IP without setup.
 */
export function parseMachineRange(cidr: string): Ipv4Range {
  const range = parseCidr(cidr)
  if (range === undefined) {
    throw new EdgeProxyError('EP_INVALID_CONFIG', `machine address range "${cidr}" must be an IPv4 CIDR such as "127.66.0.0/16" (prefix 8–30)`, { path: 'machineRange' })
  }
  if (Math.floor(range.network / 16777216) !== 127) {
    throw new EdgeProxyError('EP_INVALID_CONFIG', `machine address range "${cidr}" must lie inside 127.0.0.0/8 (loopback)`, { path: 'machineRange' })
  }
  return { base: range.network, size: range.span, cidr: range.cidr }
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

