import type { RoutingHints } from './balancer.js'

/** `fly-prefer-region: iad, ord` → ['iad', 'ord']. */
export function splitHintList(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '')
}

/**
 * Folds one request header into the routing hints (FLY-SPEC §3); other headers leave them as they are.
 * `name` is lower-case. The http handlers and `route explain` read hints through this one function.
 */
export function readRoutingHint(name: string, value: string, hints: RoutingHints | undefined): RoutingHints | undefined {
  const v = value.trim()
  if (v === '') return hints
  switch (name) {
    case 'fly-prefer-region': return { ...hints, preferRegions: splitHintList(v) }
    case 'fly-force-region': return { ...hints, forceRegions: splitHintList(v) }
    case 'fly-prefer-instance-id': return { ...hints, preferInstance: v.toLowerCase() }
    case 'fly-force-instance-id': return { ...hints, forceInstance: v.toLowerCase() }
    default: return hints
  }
}
