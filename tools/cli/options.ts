import { EdgeProxyError } from '../../schemas/errors.js'
import { ROLES, type Role } from '../../schemas/catalog-records.js'
import { REGION_CODE } from '../../schemas/app-config.js'

export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || port > 65535) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected HOST:PORT such as 127.0.0.1:4280, got "${value}"`)
  return { host: m[1] ?? m[2], port }
}

export function parseRoles(value: string): Role[] {
  const roles = value.split(',').map((r) => r.trim()).filter((r) => r !== '')
  for (const r of roles) if (!(ROLES as readonly string[]).includes(r)) throw new EdgeProxyError('EP_INVALID_REQUEST', `--roles: unknown role "${r}" (use edge, worker or edge,worker)`)
  if (roles.length === 0) throw new EdgeProxyError('EP_INVALID_REQUEST', '--roles: give at least one of edge, worker')
  return [...new Set(roles)] as Role[]
}

export function parseRegion(value: string): string {
  if (!REGION_CODE.test(value)) throw new EdgeProxyError('EP_INVALID_REQUEST', `--region: expected a three-letter region code such as ams, got "${value}"`)
  return value
}

export function parseSeq(value: string, flag: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected a positive integer, got "${value}"`)
  return n
}

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** `--port-map 80=8080,443=8443`: public port → port bound on this node. */
export function parsePortMap(value: string): Record<number, number> {
  const map: Record<number, number> = {}
  for (const pair of value.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const m = /^(\d{1,5})=(\d{1,5})$/.exec(pair)
    const from = m === null ? NaN : Number(m[1])
    const to = m === null ? NaN : Number(m[2])
    if (m === null || from < 1 || from > 65535 || to > 65535) throw new EdgeProxyError('EP_INVALID_REQUEST', `--port-map: expected PUBLIC=BOUND pairs such as 80=8080,443=8443, got "${pair}"`)
    map[from] = to
  }
  return map
}
