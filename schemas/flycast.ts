import { EdgeProxyError } from './errors.js'
import { intToIpv4, ipv4ToInt, parseCidr } from './ipv4.js'

/**
 * Flycast addresses (FLY-SPEC §9): one private IPv4 per app, named `<app>.flycast`, allocated from a
 * range. On one host the range is loopback (DESIGN §6: 127.77.0.0/16); a fleet uses a private range every
 * node routes to itself (docs/replay-and-flycast.md). Pure functions: the admin API allocates with them,
 * the proxy binds with them, the supervisor writes the names Machines resolve with them.
 */
export const DEFAULT_FLYCAST_RANGE = '127.77.0.0/16'
export const FLYCAST_SUFFIX = '.flycast'

export function flycastName(app: string): string {
  return `${app}${FLYCAST_SUFFIX}`
}

export interface FlycastRange {
  readonly cidr: string
  /** First usable address (network + 1), as an unsigned 32-bit integer. */
  readonly first: number
  /** Usable addresses: the network and broadcast addresses are left out. */
  readonly size: number
}

/** `127.77.0.0/16` → the range; the prefix must leave at least two usable addresses (≤ /30). */
export function parseFlycastRange(cidr: string): FlycastRange {
  const range = parseCidr(cidr)
  if (range === undefined) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `--flycast-range: expected an IPv4 CIDR between /8 and /30 such as ${DEFAULT_FLYCAST_RANGE}, got "${cidr}"`)
  }
  return { cidr: range.cidr, first: range.network + 1, size: range.span - 2 }
}

export function inFlycastRange(range: FlycastRange, addr: string): boolean {
  const n = ipv4ToInt(addr)
  return n !== undefined && n >= range.first && n < range.first + range.size
}

/** FNV-1a (32 bit): a stable, well-spread start for an app's probe sequence. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/**
 * The address an app gets: the first free one along a probe sequence that starts at a hash of its name.
 * Deterministic: the same name and the same taken set give the same address on every node, so nodes that
 * repair a conflict (flycastOwners) write the same value. undefined when the range is full.
 */
export function allocateFlycastAddress(range: FlycastRange, app: string, taken: ReadonlySet<string>): string | undefined {
  const start = fnv1a(app) % range.size
  for (let i = 0; i < range.size; i++) {
    const addr = intToIpv4(range.first + ((start + i) % range.size))
    if (!taken.has(addr)) return addr
  }
  return undefined
}

/**
 * Who owns each address when two apps claim the same one (two nodes allocated at once, before gossip
 * carried either choice): the app whose name sorts first. Every node computes the same owner from the
 * same catalog, binds only the owner's listeners, and the losing app is given a new address.
 */
export function flycastOwners(apps: Iterable<{ readonly name: string; readonly flycast?: string }>): Map<string, string> {
  const owners = new Map<string, string>()
  for (const app of apps) {
    if (app.flycast === undefined || app.flycast === '') continue
    const current = owners.get(app.flycast)
    if (current === undefined || app.name < current) owners.set(app.flycast, app.name)
  }
  return owners
}

