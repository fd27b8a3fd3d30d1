/**
 * Fly's region codes with airport coordinates and the aliases that fly-prefer-region, fly-force-region and
 * fly-replay accept (FLY-SPEC §3). The coordinates give a static latency estimate for regions whose RTT
 * nobody has measured yet (closeness.ts); a region not in this table is simply far away.
 */
interface RegionInfo { lat: number; lon: number; groups: readonly string[] }

const NA_US = ['na', 'us', 'usa'] as const

export const REGIONS: ReadonlyMap<string, RegionInfo> = new Map<string, RegionInfo>([
  ['ams', { lat: 52.37, lon: 4.9, groups: ['eu'] }],
  ['arn', { lat: 59.65, lon: 17.93, groups: ['eu'] }],
  ['atl', { lat: 33.64, lon: -84.43, groups: NA_US }],
  ['bog', { lat: 4.7, lon: -74.14, groups: ['sa'] }],
  ['bom', { lat: 19.09, lon: 72.87, groups: ['apac'] }],
  ['bos', { lat: 42.36, lon: -71.01, groups: NA_US }],
  ['cdg', { lat: 49.01, lon: 2.55, groups: ['eu'] }],
  ['den', { lat: 39.86, lon: -104.67, groups: NA_US }],
  ['dfw', { lat: 32.9, lon: -97.04, groups: NA_US }],
  ['ewr', { lat: 40.69, lon: -74.17, groups: NA_US }],
  ['eze', { lat: -34.82, lon: -58.54, groups: ['sa'] }],
  ['fra', { lat: 50.03, lon: 8.57, groups: ['eu'] }],
  ['gdl', { lat: 20.52, lon: -103.31, groups: ['na'] }],
  ['gig', { lat: -22.81, lon: -43.25, groups: ['sa'] }],
  ['gru', { lat: -23.43, lon: -46.47, groups: ['sa'] }],
  ['hkg', { lat: 22.31, lon: 113.92, groups: ['apac'] }],
  ['iad', { lat: 38.94, lon: -77.46, groups: NA_US }],
  ['jnb', { lat: -26.14, lon: 28.24, groups: [] }],
  ['lax', { lat: 33.94, lon: -118.41, groups: NA_US }],
  ['lhr', { lat: 51.47, lon: -0.45, groups: ['eu'] }],
  ['mad', { lat: 40.47, lon: -3.56, groups: ['eu'] }],
  ['mia', { lat: 25.79, lon: -80.29, groups: NA_US }],
  ['nrt', { lat: 35.77, lon: 140.39, groups: ['apac'] }],
  ['ord', { lat: 41.97, lon: -87.91, groups: NA_US }],
  ['otp', { lat: 44.57, lon: 26.1, groups: ['eu'] }],
  ['phx', { lat: 33.43, lon: -112.01, groups: NA_US }],
  ['qro', { lat: 20.62, lon: -100.19, groups: ['na'] }],
  ['scl', { lat: -33.39, lon: -70.79, groups: ['sa'] }],
  ['sea', { lat: 47.45, lon: -122.31, groups: NA_US }],
  ['sin', { lat: 1.36, lon: 103.99, groups: ['apac'] }],
  ['sjc', { lat: 37.36, lon: -121.93, groups: NA_US }],
  ['syd', { lat: -33.94, lon: 151.18, groups: ['apac'] }],
  ['waw', { lat: 52.17, lon: 20.97, groups: ['eu'] }],
  ['yul', { lat: 45.47, lon: -73.74, groups: ['na'] }],
  ['yyz', { lat: 43.68, lon: -79.63, groups: ['na'] }],
])

/** The alias that matches every region. */
export const ANY_REGION = 'any'

/** A distance for regions we know nothing about: farther than any measured pair on Earth. */
export const UNKNOWN_REGION_RTT_MS = 400

const EARTH_RADIUS_KM = 6371
/** Light in fibre covers ~200 km/ms one way; real routes are ~1.5× the great circle. */
const KM_PER_RTT_MS = 100 / 1.5

/** Estimated round trip between two regions in ms: 0 within a region, from coordinates otherwise. */
export function staticRegionRtt(a: string, b: string): number {
  if (a === b) return 0
  const ra = REGIONS.get(a)
  const rb = REGIONS.get(b)
  if (ra === undefined || rb === undefined) return UNKNOWN_REGION_RTT_MS
  const toRad = Math.PI / 180
  const dLat = (rb.lat - ra.lat) * toRad
  const dLon = (rb.lon - ra.lon) * toRad
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(ra.lat * toRad) * Math.cos(rb.lat * toRad) * Math.sin(dLon / 2) ** 2
  const km = 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)))
  return 1 + km / KM_PER_RTT_MS
}

/**
 * Expands a region list as users write it (`iad,ord,eu`): codes stay, aliases become their regions in
 * table order, `any` becomes undefined (no restriction). Unknown names are kept: a fleet may use its own
 * region codes.
 */
export function expandRegions(list: readonly string[]): { regions: string[]; any: boolean } {
  const regions: string[] = []
  let any = false
  for (const raw of list) {
    const name = raw.trim().toLowerCase()
    if (name === '') continue
    if (name === ANY_REGION) { any = true; continue }
    let alias = false
    for (const [code, info] of REGIONS) {
      if (info.groups.includes(name)) { alias = true; if (!regions.includes(code)) regions.push(code) }
    }
    if (!alias && !regions.includes(name)) regions.push(name)
  }
  return { regions, any }
}
